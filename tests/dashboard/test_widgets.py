"""Small shared texts of the pages."""

from __future__ import annotations

from dashboard.widgets import accuracy_text


def test_a_language_models_quality_gives_its_perplexity_beside_the_accuracy() -> None:
    """Browser QA: perplexity, which a language model's card lists, was shown on the Report page only."""
    lm = {
        "accuracy": 0.6196, "accuracy_delta": -0.0084, "accuracy_delta_ci_low": -0.0112,
        "accuracy_delta_ci_high": -0.0054, "perplexity": 3.5, "perplexity_ratio": 1.021,
        "perplexity_ratio_ci_low": 1.017, "perplexity_ratio_ci_high": 1.024,
    }  # fmt: skip
    assert accuracy_text({"metrics": lm}) == (
        "61.96%, -0.84 pp vs FP32 (95% CI -1.12 to -0.54); perplexity 3.500 (×1.021 vs FP32, 95% CI ×1.017 "
        "to ×1.024)"
    )
    classifier = {k: v for k, v in lm.items() if not k.startswith("perplexity")}
    assert "perplexity" not in accuracy_text({"metrics": classifier})
