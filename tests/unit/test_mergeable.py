"""Merging parameters across members: weighted means, exact statistics, rebasing, the data-only wire format."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.learners.mergeable import (
    MEAN,
    Entry,
    FormatError,
    contribution,
    decode,
    digest,
    encode,
    mean_entry,
    merge,
    moments_entry,
    positions,
    rebase,
    sum_entry,
)


def _moments(xs: dict[str, list[float]]) -> dict[str, tuple[float, float, float]]:
    return {k: (float(len(v)), float(np.mean(v)), float(np.var(v))) for k, v in xs.items() if v}


def test_weighted_mean_over_the_union_of_keys_absent_keys_count_as_zero() -> None:
    a = {"w": mean_entry({"x": 1.0, "y": 2.0})}
    b = {"w": mean_entry({"x": 3.0, "z": 4.0})}
    m = merge({}, [(1.0, a), (3.0, b)])
    assert m["w"].as_dict() == pytest.approx({"x": 2.5, "y": 0.5, "z": 3.0})


def test_all_zero_weights_average_equally() -> None:
    a, b = {"b": mean_entry({"": 1.0})}, {"b": mean_entry({"": 3.0})}
    assert merge({}, [(0.0, a), (0.0, b)])["b"].as_dict() == {"": 2.0}


def test_moments_merge_exactly_what_all_members_learned() -> None:
    """Base statistics + each member's contribution since the base = the statistics of every sample."""
    rng = np.random.default_rng(3)
    base_x = list(rng.normal(5, 2, 40))
    local = [list(rng.normal(m, 1, n)) for m, n in ((0, 25), (10, 70), (-3, 5))]
    base = {"s": moments_entry(_moments({"f": base_x}))}
    members = [{"s": moments_entry(_moments({"f": base_x + xs, **({"g": xs} if i == 1 else {})}))}
               for i, xs in enumerate(local)]
    merged = merge(base, [(len(xs), contribution(p, base)) for xs, p in zip(local, members, strict=True)])
    every = base_x + [x for xs in local for x in xs]
    n, mean, var = merged["s"].rows()["f"]
    assert n == len(every) and mean == pytest.approx(np.mean(every), rel=1e-12)
    assert var == pytest.approx(np.var(every), rel=1e-10)
    assert merged["s"].rows()["g"] == pytest.approx(_moments({"g": local[1]})["g"])


def test_rebase_keeps_what_a_member_learned_after_it_sent_its_update() -> None:
    sent = {"w": mean_entry({"x": 1.0}), "s": moments_entry(_moments({"f": [1.0, 2.0, 3.0]}))}
    now = {"w": mean_entry({"x": 1.5, "y": 0.25}), "s": moments_entry(_moments({"f": [1.0, 2.0, 3.0, 10.0]}))}
    merged = {"w": mean_entry({"x": 4.0}), "s": moments_entry(_moments({"f": [1.0, 2.0, 3.0, -1.0, 0.0]}))}
    out = rebase(merged, now, sent)
    assert out["w"].as_dict() == pytest.approx({"x": 4.5, "y": 0.25})
    assert out["s"].rows()["f"] == pytest.approx(_moments({"f": [1.0, 2.0, 3.0, -1.0, 0.0, 10.0]})["f"])


def test_merge_is_deterministic_and_digest_names_the_bits() -> None:
    rng = np.random.default_rng(5)
    ups = [(float(rng.integers(1, 100)),
            {"w": mean_entry({f"k{j}": float(v) for j, v in enumerate(rng.normal(size=50))})}) for _ in range(3)]
    assert digest(merge({}, ups)) == digest(merge({}, list(ups)))
    other = merge({}, [ups[0], ups[1], (ups[2][0] + 1, ups[2][1])])
    assert digest(other) != digest(merge({}, ups))


def test_wire_format_round_trips_and_refuses_what_is_not_one() -> None:
    params = {"w": mean_entry({"a": 1.0, "b": -2.5}), "s": moments_entry({"a": (3.0, 1.0, 0.5)})}
    header, back = decode(encode({"type": "update", "round": 4}, params))
    assert header == {"type": "update", "round": 4}
    assert back is not None and digest(back) == digest(params) and back["w"].kind == MEAN
    assert decode(encode({"type": "hello"}, None)) == ({"type": "hello"}, None)
    with pytest.raises(FormatError, match="no DLSYNC header"):
        decode(b"\x80\x04pickle")
    bad = bytearray(encode({"type": "x"}, params))
    bad[6] = 9
    with pytest.raises(FormatError, match="format 9"):
        decode(bytes(bad))
    with pytest.raises(FormatError, match=r"truncated|bytes after"):
        decode(encode({"type": "x"}, params)[:-8])


def test_counts_add_up_exactly_and_survive_the_wire() -> None:
    base = {"c": sum_entry({"a": 10.0, "b": 4.0})}
    members = [{"c": sum_entry({"a": 13.0, "b": 4.0})}, {"c": sum_entry({"a": 10.0, "b": 9.0, "z": 2.0})}]
    merged = merge(base, [(3.0, contribution(m, base)) for m in members])
    assert merged["c"].as_dict() == {"a": 13.0, "b": 9.0, "z": 2.0}
    # the first member counted one more "a" after it sent: kept on top of the group's counts
    out = rebase(merged, {"c": sum_entry({"a": 14.0, "b": 4.0})}, members[0])
    assert out["c"].as_dict() == {"a": 14.0, "b": 9.0, "z": 2.0}
    _, back = decode(encode({"type": "update"}, merged))
    assert back is not None and back["c"].kind == "sum" and digest(back) == digest(merged)


def test_a_vector_keyed_by_position_travels_without_its_keys() -> None:
    values = np.linspace(-1.0, 1.0, 1000)
    vec = Entry(MEAN, positions(1000), values)
    named = mean_entry({f"f{i}": float(v) for i, v in enumerate(values)})
    small, big = encode({"type": "update"}, {"w": vec}), encode({"type": "update"}, {"w": named})
    assert len(small) < 8_200 < len(big)  # 8,000 bytes of float64 and a short header; names cost their length
    _, back = decode(small)
    assert back is not None and back["w"].keys == positions(1000) and digest(back) == digest({"w": vec})
    merged = merge({}, [(1.0, {"w": vec}), (3.0, back)])
    assert merged["w"].keys is positions(1000) and merged["w"].values == pytest.approx(values)
