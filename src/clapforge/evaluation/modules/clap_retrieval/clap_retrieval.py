"""`evaluate` module: audio-text retrieval (text->audio and audio->text R@k, mAP@10) with the 5-captions protocol.

Load it from its folder, offline: `evaluate.load("<clapforge>/evaluation/modules/clap_retrieval")` (the folder is
`clapforge.evaluation.modules.module_path("clap_retrieval")`). It calls `clapforge.evaluation.retrieval_metrics`, so
clapforge must be installed; the values are exactly that function's.
"""

import datasets
import evaluate
import torch

from clapforge.evaluation.metrics import A2T_MAP_VARIANTS, retrieval_metrics

_DESCRIPTION = """Audio-text retrieval as in LAION-CLAP (after Mei et al.), one row per clip.

Text->audio: every caption of every clip is a query with one relevant clip. Audio->text: every clip is a query
whose relevant items are all its captions; R@k counts a clip when any of its captions ranks < k. mAP@10 is MRR@10
for text->audio and, for audio->text, average precision at 10 (`a2t_map="sorted"`, default) or the value LAION-CLAP's
code publishes (`a2t_map="laion"`: the captions' ranks taken in caption order, unsorted; it can exceed 1).
Similarity is cosine (embeddings are L2-normalised inside); ties count in the relevant item's favour.
"""

_INPUTS = """
Args:
    predictions: one audio embedding per clip, a list of E floats.
    references: the text embeddings of that clip's captions, a list of C lists of E floats (C >= 1, usually 5;
        their order matters only to `a2t_map="laion"`). Every caption of every clip is a candidate for every clip.
    ks: the k of R@k (default (1, 5, 10)).
    map_k: the mAP cut-off (default 10).
    a2t_map: "sorted" (default) or "laion".
Returns:
    t2a_R@1, t2a_R@5, t2a_R@10, t2a_mAP@10, a2t_R@1, a2t_R@5, a2t_R@10, a2t_mAP@10: floats in [0, 1]
    (a2t_mAP@10 with "laion" can exceed 1).
Example:
    >>> metric = evaluate.load("path/to/clap_retrieval")
    >>> metric.compute(predictions=[[1.0, 0.0], [0.0, 1.0]], references=[[[0.9, 0.1]], [[0.2, 0.8], [0.1, 0.9]]])
"""

_CITATION = """@inproceedings{laionclap2023,
  title = {Large-scale Contrastive Language-Audio Pretraining with Feature Fusion and Keyword-to-Caption Augmentation},
  author = {Wu, Yusong and Chen, Ke and Zhang, Tianyu and Hui, Yuchen and Berg-Kirkpatrick, Taylor and Dubnov, Shlomo},
  booktitle = {ICASSP},
  year = {2023}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class ClapRetrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                }
            ),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10), map_k=10, a2t_map="sorted"):
        if a2t_map not in A2T_MAP_VARIANTS:
            raise ValueError(f"a2t_map must be one of {A2T_MAP_VARIANTS}, got {a2t_map!r}")
        empty = [i for i, captions in enumerate(references) if len(captions) == 0]
        if empty:
            raise ValueError(f"clip {empty[0]} has no caption embedding")
        audio = torch.tensor(predictions, dtype=torch.float32)  # (N_a, E)
        text = torch.tensor([t for captions in references for t in captions], dtype=torch.float32)  # (N_t, E)
        text_to_audio = torch.tensor([i for i, captions in enumerate(references) for _ in captions])  # (N_t,)
        return retrieval_metrics(audio, text, text_to_audio, ks=tuple(ks), map_k=map_k, a2t_map=a2t_map)
