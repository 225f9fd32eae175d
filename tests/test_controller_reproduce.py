"""``reproduce``: the whole pipeline on the fake env, resumable; Doom's stage settings."""

from __future__ import annotations

import json

import pytest

from world_models.recipes import ReproduceConfig, reproduce, stage_configs

# Small models: one thread avoids oversubscribing the cores shared with env workers.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_doom_recipe_uses_the_original_settings_and_scale():
    full = stage_configs(ReproduceConfig(game="doom"))
    assert full["collect"].env == "doom" and full["collect"].episodes == 10_000
    assert full["vae"].model.latent_size == 64
    m, arch = full["mdrnn"], full["mdrnn"].model
    assert (arch.hidden_size, arch.done_head, arch.done_pos_weight, m.seq_len) == (
        512,
        True,
        10.0,
        500,
    )
    c = full["controller"]
    assert (c.target, c.popsize, c.rollouts, c.sigma0, c.dream.tau) == ("dream", 64, 16, 0.1, 1.15)
    assert (c.dream.dream_max_steps, c.eval_every, c.eval_rollouts) == (2100, 25, 1024)
    assert full["evaluate"].trials == 100 and full["evaluate"].env == "doom"
    assert full["evaluate_dream"].target == "dream" and full["evaluate_dream"].dream.tau == 1.15
    small = stage_configs(ReproduceConfig(game="doom", scale=0.01))
    assert small["collect"].episodes == 100 and small["controller"].generations == 20
    assert full["mdrnn"].epochs == 100 and small["mdrnn"].epochs == 10
    assert small["vae"].epochs == 2 and full["vae"].epochs == 10
    assert small["controller"].popsize == 64 and small["evaluate"].trials == 10


def test_debug_recipe_runs_end_to_end_and_resumes(tmp_path):
    config = ReproduceConfig(game="debug", root=tmp_path, workers=2, progress=False)
    lines: list[str] = []
    reproduce(config, log=lines.append)
    stages = ["collect", "vae", "encode", "mdrnn", "controller", "evaluate_dream", "evaluate"]
    heads = [line.split()[0] for line in lines if line.startswith("[")]
    assert heads == [f"[{i}/{len(stages)}]" for i in range(1, len(stages) + 1)]
    timed = [line.split(":")[0].strip() for line in lines if line.endswith(" s")]
    assert timed == stages  # wall time per stage, the evaluations included
    assert set(json.loads((tmp_path / "stages.json").read_text())) == set(timed)
    results = json.loads((tmp_path / "evaluation/results.json").read_text())
    assert results["trials"] == 4 and results["env"] == "fake-discrete"
    assert (tmp_path / "evaluation/best.gif").exists()
    dream = json.loads((tmp_path / "evaluation-dream/results.json").read_text())
    assert dream["target"] == "dream" and dream["trials"] == 4
    assert (tmp_path / "evaluation-dream/best.gif").exists()
    rows = (tmp_path / "controller/metrics.jsonl").read_text().splitlines()
    lines.clear()
    reproduce(config, log=lines.append)  # every stage finds its work done
    assert (tmp_path / "controller/metrics.jsonl").read_text().splitlines() == rows
    assert sum("skipped" in line for line in lines) == len(stages)


def test_cpu_budget_is_a_named_recipe_with_per_generation_overrides():
    from world_models.recipes import CPU_BUDGET

    cpu = stage_configs(ReproduceConfig(game="doom", budget="cpu", rollouts=4))
    assert cpu["collect"].episodes == CPU_BUDGET["collect"]["episodes"]
    assert cpu["vae"].time_budget_s == CPU_BUDGET["vae"]["time_budget_s"]
    assert cpu["mdrnn"].time_budget_s == CPU_BUDGET["mdrnn"]["time_budget_s"]
    c = cpu["controller"]
    assert (c.popsize, c.rollouts, c.dream.done_mode) == (32, 4, "sample")
    assert c.model.cell_input and not c.model.bias  # the original Doom C
    assert cpu["evaluate_dream"].dream.done_mode == "sample"
    total = sum(CPU_BUDGET[k].get("time_budget_s", 0) for k in CPU_BUDGET)
    assert total <= 75 * 60  # leaves room for collect, encode and evaluation in 90 min


@pytest.mark.slow
@pytest.mark.doom
def test_doom_recipe_at_tiny_scale_runs_on_the_real_game(tmp_path, monkeypatch):
    pytest.importorskip("vizdoom")
    monkeypatch.chdir(tmp_path)  # VizDoom writes files into the working directory
    root = reproduce(
        # the per-generation overrides keep the dream small: the real game is what is tested
        ReproduceConfig(
            game="doom",
            scale=0.001,
            root=tmp_path / "r",
            workers=2,
            progress=False,
            popsize=8,
            rollouts=2,
            dream_max_steps=300,
        ),
        log=lambda _: None,
    )
    real = json.loads((root / "evaluation/results.json").read_text())
    dream = json.loads((root / "evaluation-dream/results.json").read_text())
    assert len(real["returns"]) == len(dream["returns"]) == 4
    assert all(r > 0 for r in real["returns"])  # TakeCover: +1 per frame survived
    assert (root / "evaluation/best.gif").stat().st_size > 0
    assert len(list((root / "series").glob("ep_*.npz"))) == 10


def test_cpu_budget_calibrates_the_dream_before_evolving(tmp_path):
    config = ReproduceConfig(game="debug", budget="cpu", root=tmp_path, workers=2, progress=False)
    lines: list[str] = []
    reproduce(config, log=lines.append)
    cal = json.loads((tmp_path / "calibration.json").read_text())
    assert "calibrate" in json.loads((tmp_path / "stages.json").read_text())
    used = json.loads((tmp_path / "controller/config.json").read_text())
    assert used["dream"]["done_offset"] == cal["done_offset"]
    assert cal["data_length"] > 0 and any("done offset" in line for line in lines)


def test_session_budget_chooses_on_real_games_and_measures_random_alike(tmp_path):
    from world_models.recipes import SESSION_BUDGET

    doom = stage_configs(ReproduceConfig(game="doom", budget="session"))
    c = doom["controller"]
    assert (c.popsize, c.rollouts, c.dream.dream_max_steps) == (64, 8, 1000)
    assert doom["mdrnn"].model.shared_mixture and doom["mdrnn"].model.dropout == 0.1
    assert doom["select"].games == SESSION_BUDGET["select"]["games"]
    rand = doom["evaluate_random"]
    assert rand.policy == "random" and rand.seed == doom["evaluate"].seed
    assert rand.trials == doom["evaluate"].trials == 100
    minutes = sum(SESSION_BUDGET[k].get("time_budget_s", 0) for k in SESSION_BUDGET) / 60
    assert minutes <= 95  # collect, encode, calibration, selection and 200 games in the rest

    config = ReproduceConfig(
        game="debug", budget="session", root=tmp_path, workers=2, progress=False
    )
    lines: list[str] = []
    reproduce(config, log=lines.append)
    done = json.loads((tmp_path / "stages.json").read_text())
    assert {"calibrate", "select", "evaluate", "evaluate_random"} <= set(done)
    chosen = json.loads((tmp_path / "controller/selection.json").read_text())
    real = json.loads((tmp_path / "evaluation/results.json").read_text())
    assert real["controller"].endswith("checkpoints/selected") and chosen
    random = json.loads((tmp_path / "eval-random/results.json").read_text())
    assert random["policy"] == "random" and random["seeds"] == real["seeds"]
