import pytest

from actionclip.data import Sample, base_novel_split, class_subsets, k_shot, select_classes


def samples_per_class(counts):
    return [Sample(f"c{label}_{i}.mp4", label) for label, n in enumerate(counts) for i in range(n)]


@pytest.mark.parametrize("k", [2, 4, 8, 16])
def test_k_shot_takes_k_per_class(k):
    samples = samples_per_class([20, 17, 16])
    chosen = k_shot(samples, k, seed=0)
    assert [sum(s.label == c for s in chosen) for c in range(3)] == [k, k, k]
    assert len(set(s.path for s in chosen)) == 3 * k
    assert chosen == sorted(chosen, key=samples.index)  # original order kept
    assert k_shot(samples, k, seed=0) == chosen


def test_k_shot_seed_changes_the_draw_and_short_classes_fail():
    samples = samples_per_class([20, 20])
    assert k_shot(samples, 4, seed=0) != k_shot(samples, 4, seed=1)
    with pytest.raises(ValueError, match=r"1 classes have fewer than 8 samples .*\{1: 3\}"):
        k_shot(samples_per_class([10, 3]), 8)
    with pytest.raises(ValueError, match="single-label"):
        k_shot([Sample("a.mp4", (1, 2))], 1)


def test_base_novel_split():
    assert base_novel_split(400) == (list(range(200)), list(range(200, 400)))
    base, novel = base_novel_split(51)
    assert len(base) == 26 and novel[0] == 26 and novel[-1] == 50
    assert base_novel_split(10, num_base=3) == ([0, 1, 2], list(range(3, 10)))
    with pytest.raises(ValueError):
        base_novel_split(10, num_base=10)


def test_select_classes_relabels():
    samples = samples_per_class([1, 1, 1, 1])
    kept, names = select_classes(samples, ["a", "b", "c", "d"], [3, 1])
    assert names == ["d", "b"]
    assert [(s.path, s.label) for s in kept] == [("c1_0.mp4", 1), ("c3_0.mp4", 0)]
    with pytest.raises(ValueError):
        select_classes(samples, ["a", "b", "c", "d"], [1, 1])


def test_class_subsets_are_disjoint_and_seeded():
    subsets = class_subsets(101, 50, 2, seed=0)
    assert [len(s) for s in subsets] == [50, 50]
    assert not set(subsets[0]) & set(subsets[1])
    assert all(s == sorted(s) and 0 <= min(s) and max(s) < 101 for s in subsets)
    assert class_subsets(101, 50, 2, seed=0) == subsets != class_subsets(101, 50, 2, seed=1)
    with pytest.raises(ValueError, match="cannot draw 3 disjoint subsets of 50 from 101"):
        class_subsets(101, 50, 3)
