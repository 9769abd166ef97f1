"""Early-exit calibration: per-head thresholds, the predicted trade-off, the calibrated default."""
import json

import pytest
import torch

from r1.config import load_config
from r1.models.lm.early_exit import calibrate_exits, exit_sweep, exit_table, predicted_cost, predicted_exit
from r1.models.lm.generate import default_exit_threshold, generate
from r1.registry import build_model

V = 20


def _model():
    torch.manual_seed(0)
    m = build_model("r1_lm", flavor="tiny", num_classes=V).eval()
    with torch.no_grad():  # a sharper LM head: exit confidences spread out
        m.tok_emb.weight.mul_(40)
    return m


def _batches(t=16, n=4):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (n * 4, t), generator=g)
    y = x.roll(-1, 1)
    return [(x[i:i + 4], y[i:i + 4]) for i in range(0, n * 4, 4)]


def test_per_head_thresholds_equal_one_shared_threshold_and_act_per_head():
    m, (x, _) = _model(), _batches()[0]
    E = len(m.exit_layers)
    with torch.no_grad():
        torch.testing.assert_close(m(x, exit_threshold=[0.5] * E), m(x, exit_threshold=0.5))
        m(x, exit_threshold=[0.0] + [1.01] * (E - 1))  # every token leaves at the first head
        assert (m.last_layers_run == m.exit_layers[0]).all()
        m(x, exit_threshold=[1.01] * (E - 1) + [0.0])  # ... or at the last one
        assert (m.last_layers_run == m.exit_layers[-1]).all()
    with pytest.raises(ValueError, match="exit thresholds"):
        m(x, exit_threshold=[0.5] * (E + 1))


def test_predicted_exit_is_exact_when_tokens_do_not_interact():
    # one-token windows: a token's exit cannot change what any other token sees
    m = _model()
    batches = [(x[:, :1], y[:, :1]) for x, y in _batches()]
    table = exit_table(m, batches)
    for thr in ([0.5, 0.5], [0.2, 0.9], [0.9, 0.1]):
        rise, depth = predicted_exit(table, thr, m.exit_layers, m.n_layer)
        row = exit_sweep(m, batches, [thr])[0]
        assert rise == pytest.approx(row["loss_up"], abs=1e-5)
        assert depth == pytest.approx(row["layers_per_token"], abs=1e-6)


def test_calibration_keeps_the_measured_loss_rise_within_budget_and_becomes_the_default():
    m, batches = _model(), _batches()
    assert default_exit_threshold(m) == m.cfg.exit_threshold  # uncalibrated: the configured one
    for budget in (0.0, 0.05, 10.0):
        res = calibrate_exits(m, batches, budget)
        row = exit_sweep(m, batches, [res["thresholds"]])[0]
        assert row["loss_up"] <= budget + 1e-5 and row["loss_up"] == pytest.approx(res["loss_up"], abs=1e-5)
        assert row["layer_reduction"] == pytest.approx(res["layer_reduction"])
    assert res["layer_reduction"] > 1.2  # an unlimited budget lets tokens leave early
    m.cfg.exit_calibrate = 10.0
    m.calibrate(batches)  # with the config's cost model (exit_check_cost, exit_fill_cost)
    res = calibrate_exits(m, batches, 10.0, check=m.cfg.exit_check_cost, fill=m.cfg.exit_fill_cost)
    assert m.cfg.exit_thresholds == res["thresholds"] and default_exit_threshold(m) == res["thresholds"]
    stats = {}
    generate(m, batches[0][0][:1, :4], 8, temperature=0.0, exit_threshold=default_exit_threshold(m), stats=stats)
    assert stats["layers"] < 8 * m.n_layer


def test_trainer_calibrates_and_saves_the_thresholds(tmp_path):
    from r1.artifacts import load_model
    from r1.train import fit
    text = "".join(chr(97 + (i * 7 + i // 13) % 26) for i in range(6000))
    (tmp_path / "a.txt").write_text(text)
    metrics = fit(load_config(None, [
        "model.name=r1_lm", "model.flavor=tiny", "model.exit_calibrate=0.05", "data.name=text",
        f"data.path={tmp_path / 'a.txt'}", "data.block_size=32", "data.batch_size=8", "data.dedup=none",
        f"data.cache_dir={tmp_path / 'cache'}", "train.max_steps=3", "train.eval_every=3", "run.threads=1",
        "train.amp='off'", f"run.dir={tmp_path / 'r'}"]))
    saved = json.loads((tmp_path / "r" / "model.json").read_text())["model"]["exit_thresholds"]
    model = load_model(tmp_path / "r")
    assert len(saved) == len(model.exit_layers) and default_exit_threshold(model) == saved
    assert metrics["val/exit_loss"] - metrics["val/loss"] <= 0.05 + 1e-6  # evaluated at the calibrated default


def test_cost_model_counts_checks_of_active_heads_and_switches_off_heads_that_do_not_pay():
    m, batches = _model(), _batches()
    table = exit_table(m, batches)
    L, E = m.n_layer, len(m.exit_layers)
    # nobody exits and no head is on: cost = depth = every block
    assert predicted_cost(table, [1.01] * E, m.exit_layers, L, 0.5, 0.5) == (0.0, L, L)
    # every token leaves at the first head: 1 block, 1 check, L - 1 filled blocks
    rise, depth, cost = predicted_cost(table, [0.0] + [1.01] * (E - 1), m.exit_layers, L, 0.5, 0.25)
    assert depth == m.exit_layers[0] and cost == pytest.approx(depth + 0.5 + 0.25 * (L - depth))
    # a head above 1 is not evaluated, unless the criterion chains the heads (`learned`) and a later head is on
    thr = [1.01] * (E - 1) + [1.0]  # only the last head on (it may still never fire)
    _, d_off, off = predicted_cost(table, thr, m.exit_layers, L, 0.5, 0.0)
    _, d_chain, chain = predicted_cost(table, thr, m.exit_layers, L, 0.5, 0.0, chained=True)
    assert d_off == d_chain and off == pytest.approx(d_off + 0.5) and chain == pytest.approx(d_chain + 0.5 * E)
    # checks dearer than a block: switching any head on costs more than it saves, the search keeps them off
    res = calibrate_exits(m, batches, 10.0, check=float(L), fill=0.0)
    assert res["thresholds"] == [1.01] * E and res["layer_reduction"] == 1.0
    free = calibrate_exits(m, batches, 10.0, check=0.0, fill=0.0)
    assert free["layer_reduction"] > 1.2 and free["cost"] == pytest.approx(free["layers_per_token"], rel=0.05)


def test_calibration_reads_windows_spread_over_the_split_and_bounds_the_rise():
    from torch.utils.data import DataLoader, TensorDataset

    from r1.models.lm.early_exit import rise_bound, spread_batches
    x = torch.arange(40)[:, None].repeat(1, 3)
    loader = DataLoader(TensorDataset(x, x), batch_size=4)
    picked = torch.cat([b[0][:, 0] for b in spread_batches(loader, 2)])
    assert picked.tolist() == [0, 5, 10, 15, 20, 25, 30, 35]  # not the first 8 windows
    assert len(spread_batches(_batches(), 3)) == 3  # a plain list: its first batches
    # the error is over windows: 2 windows of 2 tokens with means 0 and 2 -> se = std([0, 2]) / sqrt(2) = 1
    rise, se = rise_bound(torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([0, 0, 1, 1]), 1.64)
    assert rise == pytest.approx(1.0) and se == pytest.approx(1.0)
    assert rise_bound(torch.tensor([0.0, 2.0]), torch.tensor([0, 1]), 0.0) == (1.0, 0.0)


def test_a_higher_confidence_keeps_the_upper_bound_within_budget_and_exits_no_more():
    m, batches = _model(), _batches()
    loose = calibrate_exits(m, batches, 0.05, confidence=0.5)
    strict = calibrate_exits(m, batches, 0.05, confidence=0.99)
    assert loose["loss_up_se"] == 0.0 and loose["loss_up"] <= 0.05 + 1e-6
    assert strict["loss_up_bound"] <= 0.05 + 1e-6 and strict["loss_up_se"] > 0
    assert strict["layers_per_token"] >= loose["layers_per_token"] - 1e-6 and strict["windows"] == 16
    with pytest.raises(ValueError, match="confidence"):
        calibrate_exits(m, batches, 0.05, confidence=1.0)
