"""Measurement primitives on real ONNX Runtime sessions of tiny seeded models."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import measure
from engine.measure import LatencyStats

IN, HIDDEN, OUT = 16, 32, 4


def build_mlp(seed: int = 0) -> onnx.ModelProto:
    """x[N,16] -> MatMul+Add+Relu -> MatMul+Add -> logits[N,4], batch dim symbolic."""
    rng = np.random.default_rng(seed)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"], name="fc2"),
        helper.make_node("Add", ["h3", "b2"], ["logits"], name="fc2_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", IN])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", OUT])],
        [init("w1", IN, HIDDEN), init("b1", HIDDEN), init("w2", HIDDEN, OUT), init("b2", OUT)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp_reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    h = np.maximum(x @ w["w1"] + w["b1"], 0)
    return h @ w["w2"] + w["b2"]


@pytest.fixture
def mlp() -> onnx.ModelProto:
    # Per test: saving with external data rewrites the proto in place.
    return build_mlp()


@pytest.fixture(scope="module")
def eval_x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((100, IN)).astype(np.float32)


# --- sessions, batches, size ---


def test_session_from_bytes_and_path_match_numpy(mlp: onnx.ModelProto, eval_x: np.ndarray, tmp_path: Path):
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp, path)
    for source in (mlp.SerializeToString(), str(path)):
        sess = measure.make_session(source, threads=1)
        assert sess.get_providers() == ["CPUExecutionProvider"]
        out = sess.run(None, {"x": eval_x[:3]})[0]
        np.testing.assert_allclose(out, mlp_reference(mlp, eval_x[:3]), rtol=1e-4, atol=1e-4)


def test_session_rejects_zero_threads(mlp: onnx.ModelProto):
    with pytest.raises(ValueError, match="threads"):
        measure.make_session(mlp.SerializeToString(), threads=0)


def test_run_batched_covers_every_row_in_order(mlp: onnx.ModelProto, eval_x: np.ndarray):
    sess = measure.make_session(mlp.SerializeToString())
    out = measure.run_batched(sess, {"x": eval_x}, batch_size=32)  # 100 rows: 32+32+32+4
    assert out.shape == (100, OUT)
    np.testing.assert_allclose(out, mlp_reference(mlp, eval_x), rtol=1e-4, atol=1e-4)


def test_run_batched_names_missing_inputs(mlp: onnx.ModelProto, eval_x: np.ndarray):
    sess = measure.make_session(mlp.SerializeToString())
    with pytest.raises(KeyError, match="'x'"):
        measure.run_batched(sess, {"input": eval_x})


def test_make_feeds_takes_first_rows_and_tiles():
    x = np.arange(10).reshape(5, 2)
    assert np.array_equal(measure.make_feeds({"x": x}, 3)["x"], x[:3])
    tiled = measure.make_feeds({"x": x}, 12)["x"]
    assert tiled.shape == (12, 2)
    assert np.array_equal(tiled[5:10], x)
    assert np.array_equal(tiled[10:], x[:2])


def test_size_counts_external_data_once(mlp: onnx.ModelProto, tmp_path: Path):
    inline = tmp_path / "inline.onnx"
    onnx.save(mlp, inline)
    assert measure.model_size_bytes(inline) == inline.stat().st_size

    ext_dir = tmp_path / "ext"
    ext_dir.mkdir()
    path = ext_dir / "model.onnx"
    onnx.save(mlp, path, save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
              size_threshold=0)  # fmt: skip
    weights = ext_dir / "w.bin"
    assert weights.stat().st_size >= 4 * (IN * HIDDEN + HIDDEN * OUT)  # several tensors, one file
    assert measure.model_size_bytes(path) == path.stat().st_size + weights.stat().st_size
    # A session on the external-data model still runs: the size we report is what loads.
    assert measure.make_session(str(path)).run(None, {"x": np.zeros((1, IN), np.float32)})[0].shape == (1, 4)


def test_size_raises_when_external_file_is_missing(mlp: onnx.ModelProto, tmp_path: Path):
    path = tmp_path / "model.onnx"
    onnx.save(mlp, path, save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(FileNotFoundError):
        measure.model_size_bytes(path)


# --- latency ---


def test_latency_stats_are_sane(mlp: onnx.ModelProto, eval_x: np.ndarray):
    sess = measure.make_session(mlp.SerializeToString(), threads=1)
    feeds = measure.make_feeds({"x": eval_x}, 8)
    stats = measure.measure_latency(sess, feeds, threads=1, min_runs=20, max_runs=120, max_seconds=5.0)
    assert stats.batch == 8 and stats.threads == 1
    assert 0 < stats.median_ms <= stats.p90_ms
    assert stats.ci_low_ms <= stats.median_ms <= stats.ci_high_ms
    assert 20 <= stats.runs <= 120
    if stats.converged:
        assert stats.ci_high_ms <= stats.median_ms * 1.05 and stats.ci_low_ms >= stats.median_ms * 0.95
    assert LatencyStats.from_json(stats.to_json()) == stats


def test_latency_respects_min_runs_even_past_the_time_cap(mlp: onnx.ModelProto, eval_x: np.ndarray):
    sess = measure.make_session(mlp.SerializeToString())
    feeds = measure.make_feeds({"x": eval_x}, 1)
    stats = measure.measure_latency(sess, feeds, threads=1, min_runs=25, max_runs=300, max_seconds=0.0)
    assert stats.runs == 25


def test_latency_stops_at_max_runs_when_ci_cannot_converge(mlp: onnx.ModelProto, eval_x: np.ndarray):
    sess = measure.make_session(mlp.SerializeToString())
    feeds = measure.make_feeds({"x": eval_x}, 1)
    # A zero-width tolerance is never met by real timings.
    stats = measure.measure_latency(sess, feeds, threads=1, min_runs=10, max_runs=40, rel_ci=0.0)
    assert stats.runs == 40
    assert not stats.converged


def test_median_ci_ranks_match_the_binomial_table():
    x = np.arange(1, 101, dtype=float)  # order statistic i has value i
    assert measure.median_ci(x) == (40.0, 61.0)


def test_median_ci_covers_the_true_median_about_95_percent():
    rng = np.random.default_rng(3)
    samples = rng.exponential(1.0, size=(400, 60))
    hits = sum(lo <= math.log(2) <= hi for lo, hi in map(measure.median_ci, samples))
    assert 0.91 <= hits / 400 <= 0.995


# --- task metrics ---


def test_classification_scores_and_accuracy():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1, 2])
    scores = measure.per_sample_scores("classification", logits, labels)
    assert scores["correct"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert measure.task_metrics("classification", logits, labels) == {"accuracy": 0.5}


def test_per_class_accuracy_with_an_absent_class():
    logits = np.eye(4)[[0, 0, 1, 2, 2, 2]]  # predictions 0 0 1 2 2 2
    labels = np.array([0, 1, 1, 2, 2, 0])
    assert measure.per_class_accuracy(logits, labels, 4) == [0.5, 0.5, 1.0, None]


def test_perplexity_of_uniform_logits_is_vocab_size():
    vocab = 37
    logits = np.zeros((3, 5, vocab), np.float32)
    labels = np.random.default_rng(0).integers(0, vocab, (3, 5))
    metrics = measure.task_metrics("language_model", logits, labels)
    assert metrics["perplexity"] == pytest.approx(vocab, rel=1e-9)
    scores = measure.per_sample_scores("language_model", logits, labels)
    np.testing.assert_allclose(scores["nll"], math.log(vocab))


def test_language_model_scores_per_sequence():
    vocab = 4
    labels = np.array([[0, 1, 2], [3, 3, -100]])  # -100: padding, ignored
    pred = np.array([[0, 1, 0], [3, 0, 0]])
    logits = np.eye(vocab)[pred] * 50.0  # confident predictions
    scores = measure.per_sample_scores("language_model", logits, labels)
    np.testing.assert_allclose(scores["correct"], [2 / 3, 1 / 2])
    metrics = measure.task_metrics("language_model", logits, labels)
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    # Wrong confident tokens cost ~50 nats each: 2 of 5 tokens wrong.
    assert metrics["perplexity"] == pytest.approx(math.exp(2 * 50 / 5), rel=1e-6)


def test_task_metrics_reject_bad_shapes_and_tasks():
    with pytest.raises(ValueError, match="labels"):
        measure.task_metrics("classification", np.zeros((4, 3)), np.zeros(5, int))
    with pytest.raises(ValueError, match="unknown task"):
        measure.task_metrics("detection", np.zeros((4, 3)), np.zeros(4, int))


# --- fidelity ---


@pytest.mark.parametrize("target_db", [10.0, 30.0, 50.0])
def test_sqnr_of_known_noise_power(target_db: float):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(200_000).astype(np.float32)  # signal power 1
    noise = rng.standard_normal(x.shape) * 10 ** (-target_db / 20)
    assert measure.sqnr_db(x, x + noise) == pytest.approx(target_db, abs=0.5)


def test_sqnr_identical_is_infinite():
    x = np.random.default_rng(0).standard_normal((4, 4))
    assert measure.sqnr_db(x, x.copy()) == math.inf


def test_sqnr_on_real_model_with_perturbed_weights(mlp: onnx.ModelProto, eval_x: np.ndarray):
    noisy = onnx.ModelProto()
    noisy.CopyFrom(mlp)
    w1 = numpy_helper.to_array(noisy.graph.initializer[0])
    w1 = w1 + np.random.default_rng(9).standard_normal(w1.shape).astype(np.float32) * 0.01
    noisy.graph.initializer[0].CopyFrom(numpy_helper.from_array(w1, "w1"))
    ref = measure.run_batched(measure.make_session(mlp.SerializeToString()), {"x": eval_x})
    test = measure.run_batched(measure.make_session(noisy.SerializeToString()), {"x": eval_x})
    assert 20 < measure.sqnr_db(ref, test) < 60
    assert measure.top1_agreement(ref, test) > 0.9
    assert 0 < measure.kl_divergence(ref, test) < 0.05


def test_top1_agreement_counts_positions():
    ref = np.eye(3)[[0, 1, 2, 0]]
    test = np.eye(3)[[0, 2, 2, 1]]
    assert measure.top1_agreement(ref, test) == 0.5
    assert measure.top1_agreement(ref[None], test[None]) == 0.5  # LM-shaped [1, T, V]


def test_kl_divergence_zero_for_same_and_matches_closed_form():
    ref = np.log(np.array([[0.5, 0.5]]))
    test = np.log(np.array([[0.9, 0.1]]))
    assert measure.kl_divergence(ref, ref) == pytest.approx(0.0, abs=1e-12)
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert measure.kl_divergence(ref, test) == pytest.approx(expected)
    assert measure.kl_divergence(ref + 100.0, test - 7.0) == pytest.approx(expected)  # shift-invariant


def test_fidelity_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        measure.sqnr_db(np.zeros(3), np.zeros(4))


# --- paired bootstrap ---


def _paired_correct(n: int, p_ref: float, p_test: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Correlated 0/1 scores, as for two models on one eval set.
    u = np.random.default_rng(seed).random(n)
    return (u < p_ref).astype(float), (u < p_test).astype(float)


def test_bootstrap_ci_contains_true_delta_and_narrows_with_more_samples():
    small_ref, small_test = _paired_correct(400, 0.80, 0.75, seed=1)
    # 20k samples x 1000 resamples goes through the chunked path.
    big_ref, big_test = _paired_correct(20_000, 0.80, 0.75, seed=1)
    d_small, lo_small, hi_small = measure.bootstrap_delta_ci(small_ref, small_test, n_boot=1000)
    d_big, lo_big, hi_big = measure.bootstrap_delta_ci(big_ref, big_test, n_boot=1000)
    assert lo_small <= -0.05 <= hi_small
    assert lo_big <= -0.05 <= hi_big
    assert lo_big <= d_big <= hi_big
    assert d_small == pytest.approx(small_test.mean() - small_ref.mean())
    assert (hi_big - lo_big) < (hi_small - lo_small) / 3


def test_bootstrap_is_paired_and_seeded():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal(500)
    test = ref + 0.1  # a constant shift: a paired bootstrap sees no spread at all
    delta, low, high = measure.bootstrap_delta_ci(ref, test, n_boot=200, seed=5)
    assert delta == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    noisy = ref + rng.standard_normal(500)
    assert measure.bootstrap_delta_ci(ref, noisy, seed=3) == measure.bootstrap_delta_ci(ref, noisy, seed=3)


# --- environment ---


def test_environment_info_fields():
    import onnxruntime

    env = measure.environment_info(threads=2)
    assert env["threads"] == 2
    assert env["onnxruntime"] == onnxruntime.__version__
    assert env["cpu"]
    assert env["logical_cores"] >= 1
    assert set(env["cpu_flags"]) <= {"avx2", "avx512f", "avx512_vnni", "avx_vnni"}
    assert {"onnx", "numpy", "python"} <= set(env)


# --- latency against FP32, timed alternately ---


def build_matmul_chain(depth: int, width: int = 192, seed: int = 0) -> onnx.ModelProto:
    """x[N,width] through `depth` MatMuls: compute grows with depth, so depth 4 costs ~4x depth 1."""
    rng = np.random.default_rng(seed)
    inits, nodes, name = [], [], "x"
    for i in range(depth):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [name, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
        name = f"h{i}"
    nodes.append(helper.make_node("Identity", [name], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _chain_session(depth: int):
    return measure.make_session(build_matmul_chain(depth).SerializeToString(), threads=1)


CHAIN_FEEDS = {"x": np.random.default_rng(1).standard_normal((64, 192)).astype(np.float32)}


def test_ratio_to_fp32_reflects_the_work_each_model_does():
    fp32 = _chain_session(1)
    heavy = measure.measure_latency(_chain_session(4), CHAIN_FEEDS, threads=1, fp32=fp32, min_runs=40)
    same = measure.measure_latency(_chain_session(1), CHAIN_FEEDS, threads=1, fp32=fp32, min_runs=40)
    assert heavy.vs_fp32 is not None and same.vs_fp32 is not None
    assert 2.5 < heavy.vs_fp32 < 5.5, heavy
    assert 0.8 < same.vs_fp32 < 1.25, same
    assert heavy.vs_fp32_ci_low <= heavy.vs_fp32 <= heavy.vs_fp32_ci_high
    assert LatencyStats.from_json(heavy.to_json()) == heavy


class _HostThatSlowsDown:
    """A real session on a host that becomes 3x slower halfway through (it sleeps twice each run's
    own time): what a noisy neighbour does to every model timed on it at that moment."""

    def __init__(self, session, clock: list[int], slow_after: int) -> None:
        self.session, self.clock, self.slow_after = session, clock, slow_after

    def run(self, names, feeds):
        start = time.perf_counter()
        out = self.session.run(names, feeds)
        self.clock[0] += 1
        if self.clock[0] > self.slow_after:
            time.sleep(2 * (time.perf_counter() - start))
        return out


def test_the_ratio_holds_when_the_host_slows_down_midway():
    clock = [0]
    model = _HostThatSlowsDown(_chain_session(2), clock, slow_after=100)
    fp32 = _HostThatSlowsDown(_chain_session(1), clock, slow_after=100)
    stats = measure.measure_latency(
        model, CHAIN_FEEDS, threads=1, fp32=fp32, min_runs=100, max_runs=100, warmup=0, rel_ci=0.0
    )
    # Half the runs (of both models) were 3x slower: timing the model alone before the FP32 model,
    # or all of one then all of the other, would put the ratio near 0.7 or 6, not near 2.
    assert stats.vs_fp32 is not None and 1.2 < stats.vs_fp32 < 2.8, stats
    assert stats.runs == 100


def test_latency_stats_keep_the_old_shape_without_a_ratio(mlp: onnx.ModelProto, eval_x: np.ndarray):
    sess = measure.make_session(mlp.SerializeToString())
    stats = measure.measure_latency(sess, measure.make_feeds({"x": eval_x}, 1), threads=1)
    assert stats.vs_fp32 is None and "vs_fp32" not in stats.to_json() and "fp32_ms" not in stats.to_json()
    with pytest.raises(ValueError, match="together"):
        LatencyStats(1, 1.0, 1.0, 1.0, 1.0, 1, 1, True, vs_fp32=1.0)
    with pytest.raises(ValueError, match="within"):
        LatencyStats(1, 1.0, 1.0, 1.0, 1.0, 1, 1, True, vs_fp32=2.0, vs_fp32_ci_low=0.9, vs_fp32_ci_high=1.1)
