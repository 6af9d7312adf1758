"""Textual prompts: the official ActionCLIP templates, user templates, class-name cleaning.

A template is a string with exactly one ``{}`` slot for the label. Templates are classified by where
the slot sits, following the paper (Sec. 3.2): *prefix* (all template text precedes the label,
e.g. "a photo of action {}"), *suffix* (all text follows it, "{}, an action") and *cloze* (text on
both sides, "Can you recognize the action of {}?"). The label-only template "{}" counts as a prefix
prompt with an empty prefix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:  # imported where used: the ONNX runtime reads templates without torch
    import torch

# The 16 templates of the official code (utils/Text_Prompt.py, in its order). The paper says K=18;
# the released code has these 16. They are data: do not edit.
ACTIONCLIP_TEMPLATES: tuple[str, ...] = (
    "a photo of action {}",
    "a picture of action {}",
    "Human action of {}",
    "{}, an action",
    "{} this is an action",
    "{}, a video of action",
    "Playing action of {}",
    "{}",
    "Playing a kind of action, {}",
    "Doing a kind of action, {}",
    "Look, the human is {}",
    "Can you recognize the action of {}?",
    "Video classification of {}",
    "A video of {}",
    "The man is {}",
    "The woman is {}",
)

# Table 3's "only label" ablation.
LABEL_ONLY_TEMPLATES: tuple[str, ...] = ("{}",)


def template_kind(template: str) -> str:
    """Return "prefix", "suffix" or "cloze" for a template with one ``{}`` slot."""
    _check_template(template)
    before, after = template.split("{}")
    if not after:
        return "prefix"
    if not before:
        return "suffix"
    return "cloze"


def _check_template(template: str, where: str = "") -> None:
    if template.count("{}") != 1 or re.search(r"\{(?!\})|(?<!\{)\}", template.replace("{}", "")):
        raise ValueError(f"{where}template {template!r} must contain exactly one '{{}}' slot and no other braces")


def load_templates(path: str | Path) -> list[str]:
    """Read templates from a text file, one per line; blank lines and lines starting with '#' are skipped."""
    path = Path(path)
    templates = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        _check_template(text, where=f"{path}:{line_number}: ")
        templates.append(text)
    if not templates:
        raise ValueError(f"{path}: no templates found")
    return templates


def resolve_templates(templates: str | Path | Sequence[str] | None) -> list[str]:
    """``None`` or "actionclip" -> the official 16; "label_only" -> ["{}"]; a path -> its lines; a list as is."""
    if templates is None or templates == "actionclip":
        return list(ACTIONCLIP_TEMPLATES)
    if templates == "label_only":
        return list(LABEL_ONLY_TEMPLATES)
    if isinstance(templates, (str, Path)):
        return load_templates(templates)
    templates = list(templates)
    if not templates:
        raise ValueError("empty template list")
    for template in templates:
        _check_template(template)
    return templates


def fill_templates(templates: Sequence[str], labels: Sequence[str]) -> list[str]:
    """All templates x all labels, template-major (the official order: index = t * C + c)."""
    return [template.format(label) for template in templates for label in labels]


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def clean_class_name(name: str) -> str:
    """Turn a dataset class id into prompt text: "ApplyEyeMakeup" -> "apply eye makeup",
    "brush_hair" -> "brush hair". Names that already contain spaces (Kinetics) are returned unchanged."""
    if " " in name:
        return name
    words = _CAMEL_BOUNDARY.sub(" ", name.replace("_", " "))
    return " ".join(words.split()).lower()


class PromptTokens:
    """Every template x class tokenized once, ``[K, C, L]``; training draws one template per sample uniformly
    at random, as the official ``train.py`` does (``numpy.random.randint(num_templates, size=batch)``)."""

    def __init__(self, tokenize: Callable[[list[str]], torch.Tensor], class_names: Sequence[str], templates=None):
        self.templates = resolve_templates(templates)
        self.class_names = list(class_names)
        tokens = tokenize(fill_templates(self.templates, self.class_names))
        self.tokens = tokens.view(len(self.templates), len(self.class_names), -1)

    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Tokens ``[B, L]`` of one uniformly drawn template per label."""
        import torch

        labels = torch.as_tensor(labels)
        template_ids = torch.randint(len(self.templates), (len(labels),), generator=generator)
        return self.tokens[template_ids, labels]
