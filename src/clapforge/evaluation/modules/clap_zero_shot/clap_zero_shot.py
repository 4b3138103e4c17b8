"""`evaluate` module: zero-shot classification top-k accuracy from per-class scores.

Load it from its folder, offline: `evaluate.load("<clapforge>/evaluation/modules/clap_zero_shot")` (the folder is
`clapforge.evaluation.modules.module_path("clap_zero_shot")`). It calls `clapforge.evaluation.zero_shot_accuracy`,
so clapforge must be installed; the values are exactly that function's.
"""

import datasets
import evaluate
import torch

from clapforge.evaluation.metrics import zero_shot_accuracy

_DESCRIPTION = """Zero-shot audio classification accuracy, top-k, one row per clip.

A clip counts as correct at k when its class ranks < k among the K classes by score; ties count in the true class's
favour (its rank is the number of classes scoring strictly higher). Any per-class scores where larger means more
likely work: a CLAP model's `logits_per_audio`, softmax probabilities, or cosine similarities to the class prompts.
"""

_INPUTS = """
Args:
    predictions: per clip, a list of K scores (the same K for every clip).
    references: per clip, the index of its class in [0, K).
    ks: the k of top-k (default (1, 5)); a k larger than K is left out of the result.
Returns:
    top1, top5, ...: floats in [0, 1].
Example:
    >>> metric = evaluate.load("path/to/clap_zero_shot")
    >>> metric.compute(predictions=[[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]], references=[1, 2], ks=[1, 2])
    {'top1': 0.5, 'top2': 1.0}
"""

_CITATION = """@inproceedings{laionclap2023,
  title = {Large-scale Contrastive Language-Audio Pretraining with Feature Fusion and Keyword-to-Caption Augmentation},
  author = {Wu, Yusong and Chen, Ke and Zhang, Tianyu and Hui, Yuchen and Berg-Kirkpatrick, Taylor and Dubnov, Shlomo},
  booktitle = {ICASSP},
  year = {2023}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class ClapZeroShot(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, ks=(1, 5)):
        scores = torch.tensor(predictions, dtype=torch.float32)  # (N, K)
        if scores.ndim != 2:
            raise ValueError("predictions must hold the same number of class scores for every clip")
        # Scores against one-hot class vectors: zero_shot_accuracy L2-normalises each row, a positive rescaling that
        # keeps the order of a clip's class scores, so the ranks (and accuracies) are the scores' own.
        classes = torch.eye(scores.shape[1])  # (K, K)
        return zero_shot_accuracy(scores, classes, torch.tensor(references), ks=tuple(ks))
