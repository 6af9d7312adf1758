import pytest

from actionclip.prompts import ACTIONCLIP_TEMPLATES, clean_class_name, fill_templates, load_templates, resolve_templates, template_kind


def test_official_templates_are_the_released_sixteen():
    assert len(ACTIONCLIP_TEMPLATES) == 16
    assert ACTIONCLIP_TEMPLATES[0] == "a photo of action {}"
    assert ACTIONCLIP_TEMPLATES[7] == "{}"
    assert ACTIONCLIP_TEMPLATES[11] == "Can you recognize the action of {}?"
    assert ACTIONCLIP_TEMPLATES[15] == "The woman is {}"


def test_template_kinds():
    kinds = [template_kind(t) for t in ACTIONCLIP_TEMPLATES]
    assert kinds.count("suffix") == 3  # "{}, an action", "{} this is an action", "{}, a video of action"
    assert kinds.count("cloze") == 1
    assert kinds.count("prefix") == 12
    assert template_kind("{}, an action") == "suffix"


def test_fill_is_template_major():
    texts = fill_templates(["a {}", "{} b"], ["x", "y", "z"])
    assert texts == ["a x", "a y", "a z", "x b", "y b", "z b"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ApplyEyeMakeup", "apply eye makeup"),
        ("YoYo", "yo yo"),
        ("brush_hair", "brush hair"),
        ("arm wrestling", "arm wrestling"),
        ("Arm Wrestling", "Arm Wrestling"),
        ("TaiChi", "tai chi"),
        ("PlayingDaf", "playing daf"),
    ],
)
def test_clean_class_name(name, expected):
    assert clean_class_name(name) == expected


def test_template_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("# comment\na video of {}\n\nno slot here\n")
    with pytest.raises(ValueError, match=r"t\.txt:4: "):
        load_templates(path)
    path.write_text("a video of {}\n{} again\n")
    assert load_templates(path) == ["a video of {}", "{} again"]
    assert resolve_templates(path) == ["a video of {}", "{} again"]
    assert resolve_templates("label_only") == ["{}"]


def test_prompt_tokens_draw_templates_uniformly():
    import open_clip
    import torch

    from actionclip.prompts import PromptTokens

    bank = PromptTokens(open_clip.tokenize, ["arm wrestling", "swimming"])
    assert bank.tokens.shape == (16, 2, 77)
    labels = torch.tensor([1, 0] * 8000)
    tokens = bank.sample(labels, generator=torch.Generator().manual_seed(0))
    # Each drawn row is one of label's 16 prompts, never another class's.
    matches = (tokens[:, None, :] == bank.tokens[:, labels].permute(1, 0, 2)).all(-1)
    assert matches.any(1).all()
    counts = torch.bincount(matches.float().argmax(1), minlength=16).float()
    assert counts.sum() == 16000 and (counts - 1000).abs().max() < 150  # ~4.7 sigma of a binomial(16000, 1/16)
    assert torch.equal(bank.tokens[3, 1], open_clip.tokenize(["swimming, an action"])[0])
