import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import actionclip
from actionclip.cli.main import main
from actionclip.demo import report, world
from actionclip.demo.recipes import VARIANTS, pretrain_tower, quick_config
from actionclip.demo.run import in_worker, register_models, run_variant
from actionclip.engine.objectives import class_logits
from actionclip.engine.pretrain import PretrainConfig, check_captions_fit
from actionclip.prompts import ACTIONCLIP_TEMPLATES, fill_templates
from conftest import random_video
from forked import Forked

KEYS = ("actionclip_transf", "actionclip_meanp", "unimodal", "random_init", "label_only", "actionclip_vit", "actionclip_vit_ce", "xclip")


# The quick run's acceptance bars need the two pre-trained CLIPs and these two variants; the other variants are
# fine-tuned briefly from the same CLIPs in `test_every_variant_fine_tunes_and_reports_with_chance`.
QUICK_VARIANTS = ("actionclip_transf", "xclip")
# Enough to run every step of a variant: a few fine-tuning steps on one video per class.
BRIEF = replace(quick_config(), finetune_steps=5, train_draws=1, test_draws=1)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """`actionclip demo --quick` for the variants of the acceptance bars, once per session, in a new process: it forks
    its workers, which autograd refuses where the process has trained before (as other tests here do)."""
    output = tmp_path_factory.mktemp("demo")
    demo = Forked(
        main,
        ["demo", "--quick", "--output", str(output), "--variants", ",".join(QUICK_VARIANTS)],
        output=tmp_path_factory.mktemp("demo-log") / "demo",
    )
    assert demo.wait(timeout=600) == 0, demo.stderr[-3000:]
    register_models()  # for the variants fine-tuned here
    return output


def test_the_quick_run_reports_its_variants_and_both_pretrained_clips(quick):
    results = json.loads((quick / "results.json").read_text())
    assert [key for key in KEYS if key in results] == list(QUICK_VARIANTS)
    assert (quick / "results.png").stat().st_size > 10_000
    assert (quick / "pretrain" / "clip.pt").is_file() and (quick / "pretrain_vit" / "clip.pt").is_file()
    assert results["pretrain"]["image_tower"] == "resnet" and results["pretrain_vit"]["image_tower"] == "vit"


def test_every_variant_fine_tunes_and_reports_with_chance(quick, tmp_path):
    results = json.loads((quick / "results.json").read_text())
    for key in KEYS:
        if key not in results:
            results[key] = run_variant(key, quick / report.pretrain_key(VARIANTS[key].tower) / "clip.pt", BRIEF, log=lambda line: None)
    for key in KEYS:
        row = results[key]
        assert 0 <= row["supervised_top1"] <= 1
        assert row["chance"] == {
            "supervised_top1": pytest.approx(1 / 48),
            "zero_shot_top1": pytest.approx(1 / 24),
            **({} if key == "unimodal" else {"generalized_zero_shot_top1": pytest.approx(1 / 72)}),
        }
    assert results["unimodal"]["zero_shot_top1"] is None  # a linear head cannot score unseen classes
    for key in KEYS:  # bf16 weights change only near-tie predictions: a broken cast would scatter them
        assert results[key]["bf16_top1_agreement"] >= 0.9
    assert all(f"| {key} |" in report.format_table(results) for key in KEYS)
    report.plot_results(results, tmp_path / "results.png")
    assert (tmp_path / "results.png").stat().st_size > 10_000


def test_quick_meets_the_acceptance_bars(quick):
    results = json.loads((quick / "results.json").read_text())
    pretrain = results["pretrain"]
    assert pretrain["single_image_zero_shot_top1"] > 0.7
    assert results["pretrain_vit"]["single_image_zero_shot_top1"] > 0.5
    for key in QUICK_VARIANTS:
        row = results[key]
        assert row["zero_shot_top1"] >= 2 * row["chance"]["zero_shot_top1"]
        assert row["supervised_top1"] >= 5 * row["chance"]["supervised_top1"]


def _fine_tune_as_a_worker(key, pretrained, config):
    register_models()
    print(json.dumps(in_worker(run_variant, key, pretrained, config)))


def test_a_variant_fine_tuned_in_a_worker_process_gives_identical_numbers(quick, tmp_path):
    # The demo fine-tunes its variants in worker processes: the same pre-trained file, the numbers of this process to
    # the bit.
    pretrained = quick / "pretrain" / "clip.pt"
    worker = Forked(_fine_tune_as_a_worker, "actionclip_meanp", pretrained, BRIEF, output=tmp_path / "worker")
    assert worker.wait() == 0, worker.stderr[-3000:]
    there = json.loads(worker.stdout.splitlines()[-1])  # after the lines it logged
    here = run_variant("actionclip_meanp", pretrained, BRIEF, log=lambda line: None)
    for key in ("supervised_top1", "zero_shot_top1", "generalized_zero_shot_top1", "final_loss"):
        assert here[key] == there[key]


def test_pre_training_again_gives_identical_losses():
    config = replace(quick_config(), pretrain_images=256, pretrain=PretrainConfig(steps=6, batch_size=32, lr=2e-3, log_every=100))
    length = check_captions_fit(world.pretraining_pairs(256, 0)[1], 77)
    runs = [pretrain_tower(config, length, "resnet", log=lambda line: None)[1] for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 6


def test_split_holds_out_a_two_by_two_block_of_colour_shape_pairs():
    train, unseen = world.splits()
    assert len(train) == 48 and len(unseen) == 24
    assert not {c[:2] for c in train} & {c[:2] for c in unseen}
    # Among the unseen classes neither colour nor shape alone names the pair.
    pairs = {c[:2] for c in unseen}
    assert len({colour for colour, _ in pairs}) == 2 and len({shape for _, shape in pairs}) == 2
    # ... while every colour, shape and motion is fine-tuned on.
    assert {c[0] for c in train} == set(world.COLOURS) and {c[2] for c in train} == set(world.MOTIONS)


def test_twin_videos_are_one_drawing_played_both_ways():
    videos = world.render_videos([("blue", "triangle", m) for m in world.MOTIONS], draws=2, seed=0, stream=9)
    assert len(videos.labels) == 12
    assert torch.equal(videos.frames[1], videos.frames[0].flip(0))
    names = videos.names
    assert (names[videos.labels[0]], names[videos.labels[1]]) == ("blue triangle moving right", "blue triangle moving left")


def _trail(motion):
    rng = np.random.default_rng(0)
    clip = world.draw_clip("square", "red", motion, 32, 8, rng)
    return world.motion_trail(clip, motion)[..., 0].astype(float), clip[0, 0, 0, 0]


@pytest.mark.parametrize("motion, sign", [("right", 1), ("left", -1)])
def test_motion_trail_is_brightest_where_the_shape_ends(motion, sign):
    red, background = _trail(motion)
    columns = np.nonzero(red > background)[1]
    brightest = np.nonzero(red == red.max())[1]
    assert sign * (brightest.mean() - columns.mean()) > 2


def test_growing_and_shrinking_trails_differ_inside_out():
    # Growing: the newest, largest shape is painted first in full colour, the older smaller ones fainter on top;
    # shrinking: the newest, smallest one in full colour in the middle.
    grow, background = _trail("grow")
    shrink, _ = _trail("shrink")
    ys, xs = np.nonzero(grow > background)
    centre = grow[int(ys.mean()), int(xs.mean())]
    assert centre < grow.max()
    assert shrink[int(ys.mean()), int(xs.mean())] == shrink.max()


def test_captions_and_prompts_fit_the_context_length():
    labels = [world.class_text(*c) for c in world.all_classes()]
    images, captions = world.pretraining_pairs(64, seed=0)
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.uint8
    assert any("moving" in c for c in captions) and any(
        c.endswith(("left", "right", "top", "bottom")) and "moving" not in c for c in captions
    )
    length = check_captions_fit(fill_templates(ACTIONCLIP_TEMPLATES, labels) + labels + captions, 77)
    assert length <= 20


@pytest.mark.parametrize("arch", ["actionclip", "xclip"])
def test_class_logits_from_cached_text_features_are_the_models_logits(arch):
    model = actionclip.create_model("test-tiny", arch=arch, seed=0).eval()
    video = random_video(batch=3)
    tokens = model.tokenize(["red circle moving left", "blue square growing"])
    with torch.no_grad():
        expected = model.logits(video, tokens) if arch == "xclip" else model(video, tokens)[0]
        logits = class_logits(model, video, text_features=model.encode_text(tokens))
    assert logits.shape == (3, 2)
    torch.testing.assert_close(logits, expected)


def test_bf16_agreement_counts_flips_and_their_largest_margin():
    full = torch.tensor([[0.6, 0.4], [0.51, 0.49], [0.2, 0.8], [0.45, 0.55]])
    low = torch.tensor([[0.7, 0.3], [0.48, 0.52], [0.3, 0.7], [0.56, 0.44]])
    three_way = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    agreement, margin = report.bf16_agreement([(full, low), (three_way, three_way)])
    assert agreement == pytest.approx(4 / 6)
    assert margin == pytest.approx(0.1)  # the two flips had margins 0.02 and 0.10
    assert report.bf16_agreement([(full, full)]) == (1.0, 0.0)
