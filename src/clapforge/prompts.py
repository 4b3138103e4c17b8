"""Zero-shot prompts: LAION's default template and the one rule that puts a label into a template.

Below every layer (the synthetic corpus in `data` declares its prompt with it; `inference.zero_shot` scores with it)
and free of torch and transformers, so the command line can show the default in `--help` without loading them.
"""

DEFAULT_PROMPT = "This is a sound of {label}."


def format_prompt(template: str, label: str) -> str:
    """`template` with `label` in place of `{label}` (or of `{}`, as transformers' zero-shot pipeline writes it).

    Plain replacement, not `str.format`: other braces in a template or a label stay as they are. A template without
    a placeholder would give every class the same text, so it is an error.
    """
    if "{label}" not in template and "{}" not in template:
        raise ValueError(f"prompt template {template!r} has no {{label}} placeholder")
    return template.replace("{label}", label).replace("{}", label)
