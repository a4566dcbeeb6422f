"""The rendered report: escaping of hostile text, one summary row per experiment, missing shown as missing."""

from __future__ import annotations

import csv
import html.parser
import json
import re
from pathlib import Path

import pytest

from medlens.errors import ConfigError
from medlens.report.claims import load_seed_claims
from medlens.report.collect import collect_experiment
from medlens.report.render import build_report, curve_plots, write_report
from medlens.report.tables import SUMMARY_COLUMNS, SUMMARY_TABLES, table_keys

KEYS = [k for k, _ in SUMMARY_COLUMNS]

HOSTILE = "<script>alert(1)</script> </table></td> \"quoted\" 'single' & <img src=x onerror=alert(2)>"


class _Elements(html.parser.HTMLParser):
    """Every start tag of a page, and each experiment's cells of the summary tables as text by column key.

    The summary is one table per stage; an experiment's row in each is merged into one dict.
    """

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.summary_rows: list[dict[str, str]] = []
        self._row = -1
        self._in_summary = self._in_body = False
        self._cell: list[str] | None = None
        self._key = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table" and "summary" in attrs.get("class", "").split():
            self._in_summary, self._row = True, -1
        elif self._in_summary and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self._row += 1
            if self._row == len(self.summary_rows):
                self.summary_rows.append({})
        elif self._in_body and tag == "td":
            self._cell, self._key = [], attrs["data-key"]

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            text = " ".join("".join(self._cell).split())
            assert self.summary_rows[self._row].setdefault(self._key, text) == text, self._key
            self._cell = None
        elif tag == "table" and self._in_summary:
            self._in_summary = self._in_body = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tex_cells(path, name: str) -> dict[str, str]:
    """An experiment's cells of the LaTeX tables (one row in each), by column key."""
    lines = [line for line in Path(path).read_text().splitlines() if line.startswith(f"{name} & ")]
    assert len(lines) == len(SUMMARY_TABLES), lines
    cells = {}
    for line, (_, _, text_keys, groups) in zip(lines, SUMMARY_TABLES, strict=True):
        values = [c.strip() for c in line.removesuffix(r"\\").split(" & ")]
        cells.update(zip(table_keys(text_keys, groups), values, strict=True))
    return cells


def parse(path) -> _Elements:
    parser = _Elements()
    parser.feed(Path(path).read_text(encoding="utf-8"))
    return parser


def outputs(tmp_path, names):
    return {
        "out_html": tmp_path / "out" / "report.html",
        "out_pages": [tmp_path / "out" / name / "report.html" for name in names],
        "out_csv": tmp_path / "out" / "paper" / "summary.csv",
        "out_tex": tmp_path / "out" / "paper" / "summary.tex",
    }


def render(tmp_path, env_info, specs):
    """collect + write_report for ``{name: (files, config)}``; returns the output paths."""
    out = outputs(tmp_path, list(specs))
    experiments = []
    for name, (files, config) in specs.items():
        exp = collect_experiment(name, files, config)
        exp["seed_claims"] = (
            load_seed_claims(config["report"]["seed_claims"]) if config["report"]["seed_claims"] else None
        )
        experiments.append(exp)
    write_report(experiments, env_info=env_info, **out)
    return out


def test_hostile_report_text_and_label_are_shown_as_text(tmp_path, make_experiment, env_info):
    files, config = make_experiment(
        "evil", texts=["plain", HOSTILE, "other", "more"], labels={HOSTILE: HOSTILE, "Edema": "Edema"}
    )
    config["description"] = HOSTILE
    out = render(tmp_path, env_info, {"evil": (files, config)})
    for page in (out["out_html"], out["out_pages"][0]):
        text = Path(page).read_text(encoding="utf-8")
        elements = parse(page)
        assert not [
            t for t, _ in elements.tags if t == "script"
        ]  # neither the template nor the data adds one
        assert not [a for _, a in elements.tags if "onerror" in a]
        assert all(
            src.startswith("data:image/png;base64,")
            for t, a in elements.tags
            if t == "img"
            for src in [a["src"]]
        )
        # the text is there, escaped, in the generations, retrieval examples, label tables and the ROC legend
        assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4
        assert (
            "&lt;/table&gt;&lt;/td&gt;" in text and "&#34;quoted&#34;" in text and "&#39;single&#39;" in text
        )
        assert "<script>alert(1)" not in text and '</table></td> "quoted' not in text
        assert len(elements.summary_rows) == 1 and list(elements.summary_rows[0]) == [
            "experiment",
            "datasets",
            "encoder",
            *KEYS[4:11],
            "decoder",
            *KEYS[11:],
        ]  # the tables are whole


def _json_value(files, which, path):
    value = json.loads(Path(files[f"{which}_eval"]).read_text())
    for key in path.split("."):
        value = value[key]
    return value


def test_two_experiments_give_two_rows_with_the_json_numbers_in_html_csv_and_latex(
    tmp_path, make_experiment, env_info
):
    specs = {
        "alpha": make_experiment("alpha", zero_shot_auc=0.61234, probe=0.70111, bleu4=0.12345, f1=0.33333),
        "beta": make_experiment("beta", zero_shot_auc=0.87654, probe=0.91919, bleu4=0.05432, f1=0.55555),
    }
    out = render(tmp_path, env_info, specs)

    with open(out["out_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["experiment"] for r in rows] == ["alpha", "beta"]
    checked = {
        "zero_shot_auc": ("encoder", "zero_shot.mean.auc"),
        "zero_shot_auc_ci_low": ("encoder", "zero_shot.mean.ci_low"),
        "probe_auc_chexpert5": ("encoder", "linear_probe.chexpert5.mean.auc"),
        "i2t_r@5": ("encoder", "retrieval.image_to_text.recall@5.value"),
        "bleu4": ("decoder", "overall.text.bleu4"),
        "rouge_l": ("decoder", "overall.text.rouge_l"),
        "cider_d": ("decoder", "overall.text.cider_d"),
        "clinical_f1_micro_14": ("decoder", "overall.clinical.chexpert14.micro.f1"),
        "clinical_f1_macro_all_5": ("decoder", "overall.clinical.chexpert5.macro_all.f1"),
    }
    html_rows = parse(out["out_html"]).summary_rows
    assert len(html_rows) == 2
    for row, cells, (name, (files, _)) in zip(rows, html_rows, specs.items(), strict=True):
        tex = tex_cells(out["out_tex"], name)
        for key, (which, path) in checked.items():
            expected = _json_value(files, which, path)
            assert float(row[key]) == expected, key  # CSV: full precision
            if key in KEYS:
                assert tex[key].split(" [")[0] == f"{expected:.3f}", key
                assert cells[key].split(" [")[0] == f"{expected:.3f}", key
        for key in ("zero_shot_auc", "probe_auc_chexpert5", "i2t_r@5"):  # each interval the JSON holds
            which, path = checked[key]
            parent = path.rsplit(".", 1)[0]
            low, high = (_json_value(files, which, f"{parent}.{end}") for end in ("ci_low", "ci_high"))
            assert tex[key].endswith(f" [{low:.2f}, {high:.2f}]"), key
            assert cells[key].endswith(f" [{low:.2f}, {high:.2f}]"), key
        assert "[" not in tex["clinical_f1_micro_14"] + cells["clinical_f1_micro_14"]  # none computed
    # each experiment's own page has its own row only
    assert [r["experiment"] for r in parse(out["out_pages"][1]).summary_rows] == ["beta"]


def test_a_missing_metric_is_shown_as_missing_never_zero(tmp_path, make_experiment, env_info):
    files, config = make_experiment("partial", probe=None, bleu4=None)
    out = render(tmp_path, env_info, {"partial": (files, config)})
    cells = parse(out["out_html"]).summary_rows[0]
    for key in ("probe_auc_chexpert5", "probe_auc_nih14", "bleu4"):
        assert cells[key] == "missing", key
    assert cells["bleu3"] == "0.200"  # present metrics are printed
    with open(out["out_csv"], newline="") as f:
        row = next(csv.DictReader(f))
    assert row["bleu4"] == "" and row["probe_auc_chexpert5"] == "" and row["bleu3"] == "0.2"
    assert tex_cells(out["out_tex"], "partial")["bleu4"] == "--"
    page = Path(out["out_html"]).read_text()
    # the report-generation table says so too, and no 0.000 stands in for BLEU-4 anywhere
    assert re.search(r"BLEU-4</td><td><span class=\"missing\">missing</span>", page)
    assert "no benchmark file" in page  # a stage without its benchmark file


def test_seed_claims_sit_beside_the_measured_figures(tmp_path, make_experiment, env_info):
    files, config = make_experiment("seeded", seed_claims="siglip_base")
    page = Path(render(tmp_path, env_info, {"seeded": (files, config)})["out_pages"][0]).read_text()
    claims = page[page.index('<table class="claims">') :]
    claims = claims[: claims.index("</table>")]
    # 001's 11.5 -> 5.3 beside the first and last logged encoder loss of metrics.csv (11.0 and 4.0)
    assert re.search(
        r"11\.5 <span class=\"badge\">claimed</span></td><td>11\.000</td><td>-0\.500</td>", claims
    )
    assert re.search(r"5\.3 <span class=\"badge\">claimed</span></td><td>4\.000</td><td>-1\.300</td>", claims)
    assert "002_ecaa274c7483d533.txt" in claims and "Step 100: Loss = 11.5" in claims


def test_a_claim_medlens_does_not_measure_is_missing(tmp_path, make_experiment, env_info):
    files, config = make_experiment("lap", seed_claims="lapvqa_captioner")
    page = Path(render(tmp_path, env_info, {"lap": (files, config)})["out_pages"][0]).read_text()
    claims = page[page.index('<table class="claims">') :]
    assert re.search(
        r"0\.686 <span class=\"badge\">claimed</span></td><td><span class=\"missing\">missing</span>", claims
    )  # the fabricated CheXpert-5 probe of the encoder is not the captioner's tower


def test_curves_plot_loss_lr_temperature_and_validation_against_step():
    rows = [
        {"step": 1.0, "train/loss": 3.0, "lr": 1e-3, "logit_scale": 10.0, "val/loss": 2.0, "val/auc": 0.6},
        {"step": 2.0, "train/loss": 2.0, "lr": 5e-4, "logit_scale": 20.0},
    ]
    plots = curve_plots("encoder", rows)
    assert set(plots) == {"loss", "lr", "temperature", "validation"}
    assert all(svg.startswith("<svg") for svg in plots.values())
    assert "val/auc" in plots["validation"] and "val/loss" in plots["loss"]
    assert curve_plots("decoder", []) == {}


def test_build_report_rejects_an_unknown_seed_system(tmp_path, make_experiment):
    files, config = make_experiment("x", seed_claims="no_such_seed")
    with pytest.raises(ConfigError, match="unknown seed system 'no_such_seed'.*lapvqa_captioner"):
        build_report({"x": {"files": files, "config": config}}, **outputs(tmp_path, ["x"]))


def test_a_stage_run_with_another_package_version_is_flagged_at_the_top(tmp_path, make_experiment, env_info):
    drifted = {
        "matches_lock": False,
        "differences": {
            "missing": [],
            "extra": [],
            "different": [{"name": "transformers", "locked": "5.24.0", "installed": "5.25.0"}],
        },
    }
    specs = {"locked": make_experiment("locked"), "drifted": make_experiment("drifted", environment=drifted)}
    out = render(tmp_path, env_info, specs)
    page = Path(out["out_html"]).read_text()
    alarm = re.search(r'<div class="alarm" id="lock-warning">(.*?)</div>', page, re.S)
    assert alarm and page.index('id="lock-warning"') < page.index('id="summary"')  # before any number
    assert alarm.group(1).count("drifted:") == 4  # both trainings and both evaluations
    assert (
        "drifted: train_encoder ran with packages that differ from its lock: transformers 5.25.0 installed, "
        "5.24.0 locked"
        in alarm.group(1)
        and "locked:" not in alarm.group(1)
    )
    assert 'id="lock-sha256">' + "a" * 64 in page
    assert (
        "lock-warning" not in Path(out["out_pages"][0]).read_text()
    )  # the locked experiment's own page is clean


def test_a_stage_from_another_lock_or_without_a_record_is_flagged(tmp_path, make_experiment, env_info):
    files, config = make_experiment("other", environment={"lock_sha256": "b" * 64})
    Path(files["decoder"], "medlens.json").write_text(
        "{}"
    )  # written before stages recorded their environment
    page = Path(render(tmp_path, env_info, {"other": (files, config)})["out_html"]).read_text()
    assert (
        "other: train_encoder ran from another lock (sha256 bbbbbbbbbbbb, this report&#39;s is aaaaaaaaaaaa)"
        in page
    )
    assert "other: train_decoder recorded no environment" in page


def test_each_stage_names_the_machine_it_ran_on(tmp_path, make_experiment, env_info):
    # the demo's numbers moved between two AVX2 machines of one kind: a reader must see which one ran a stage
    node = {
        "host": "gpu-node-7",
        "cpu": "AMD EPYC 9654",
        "cpu_id": "vendor_id AuthenticAMD, cpu family 25, model 17, stepping 1",
        "cpu_count": 32,
        "torch_cpu_capability": "AVX512",
        "torch_threads": 8,
        "gpus": ["NVIDIA H200"],
    }
    files, config = make_experiment("m", environment={"machine": node})
    Path(files["decoder"], "medlens.json").write_text("{}")  # a stage that recorded nothing
    page = Path(render(tmp_path, env_info, {"m": (files, config)})["out_html"]).read_text()
    table = re.search(r'<table id="stage-environments">(.*?)</table>', page, re.S).group(1)
    row = re.search(r"<td class=\"text\">train_encoder</td>(.*?)</tr>", table, re.S).group(1)
    assert (
        "gpu-node-7: AMD EPYC 9654 (vendor_id AuthenticAMD, cpu family 25, model 17, stepping 1), "
        "torch kernels AVX512, 8 threads; NVIDIA H200" in row
    )
    assert "not recorded" in re.search(r"<td class=\"text\">train_decoder</td>(.*?)</tr>", table, re.S).group(
        1
    )


def test_the_real_environment_lists_every_installed_package_and_its_lock(repo):
    from medlens.environment import installed_packages
    from medlens.report.provenance import environment

    env = environment()
    assert set(env["packages"]) == set(installed_packages()) | {"open-clip-torch"}
    assert list(env["packages"])[:2] == ["torch", "torchvision"]
    assert env["lock"]["lock_sha256"] and "packages" not in env["lock"]


def test_each_experiment_opens_with_what_was_learned_per_finding(tmp_path, make_experiment, env_info):
    files, config = make_experiment("learn")
    decoder = json.loads(Path(files["decoder_eval"]).read_text())
    decoder["overall"]["clinical"]["n"] = 3
    decoder["overall"]["clinical"]["per_label"] = {
        "Cardiomegaly": {"f1": 1.0, "ci_low": 1.0, "ci_high": 1.0, "support": 1, "n_generated": 1},
        "Pleural Effusion": {"f1": 0.0, "ci_low": 0.0, "ci_high": 0.0, "support": 2, "n_generated": 0},
    }
    Path(files["decoder_eval"]).write_text(json.dumps(decoder))
    out = render(tmp_path, env_info, {"learn": (files, config)})
    page = Path(out["out_pages"][0]).read_text()
    # before everything else of the experiment
    assert page.index('id="learned-learn"') < page.index("<h3>Data</h3>")
    table = page[page.index('<table class="learned">') :]
    table = table[: table.index("</table>")]
    card = re.search(r'<tr data-finding="Cardiomegaly">.*?</tr>', table, re.S).group(0)
    effusion = re.search(r'<tr data-finding="Pleural Effusion">.*?</tr>', table, re.S).group(0)
    # the fixture's zero-shot AUC 0.70 [0.60, 0.80] is above chance; the probe scored no single label
    assert '0.70 <span class="ci">[0.60, 0.80]</span>' in card and 'class="v-learned"' in card
    assert "n/a" in card
    # the reports never state the effusion: F1 0 beside the image-blind 2p/(1+p) = 2(2/3)/(5/3) = 0.80
    assert "<td>0.80</td>" in effusion and 'class="v-not-learned">not learned' in effusion
    assert "0 (truth 2)" in effusion
    headline = re.search(r'<p class="headline" data-experiment="learn">.*?</p>', page, re.S).group(0)
    assert "zero-shot <strong>2 of 2</strong>" in headline
    assert "generated reports <strong>1 of 2</strong>" in headline


def test_the_leakage_audit_is_shown_with_its_counts_and_examples(tmp_path, make_experiment, env_info):
    files, config = make_experiment("leaky")
    split = json.loads(Path(files["split"]).read_text())
    group = {"groups": 2, "rows": 4, "cross_split_groups": 1, "cross_dataset_groups": 2, "action": "keep"}
    example = {"ids": ["a/1", HOSTILE], "splits": ["train", "test"], "datasets": ["a", "b"], "size": 3}
    split["leakage"] = {
        "enabled": True,
        "rows_audited": 40,
        "images_exact": {**group, "dropped": 0, "examples": [example]},
        "images_near": {**group, "groups": 3, "dropped": 0, "max_distance": 16, "examples": []},
        "texts": {**group, "action": "drop", "dropped": 1, "examples": []},
    }
    split["duplicates_kept_together"] = {
        "by": ["images"],
        "groups": 2,
        "patients": 5,
        "rows": 7,
        "largest": 4,
    }
    Path(files["split"]).write_text(json.dumps(split))
    page = Path(render(tmp_path, env_info, {"leaky": (files, config)})["out_pages"][0]).read_text()
    section = page[page.index('id="leakage-leaky"') :]
    assert "Grouped here (images): <span data-merged>5 patients in 2 groups, 7 rows</span>." in section
    rows = re.findall(r'<tr data-leakage="(\w+)">(.*?)</tr>', section)
    cells = {key: re.findall(r"<td[^>]*>(.*?)</td>", row) for key, row in rows}
    assert cells["images_exact"] == ["identical images", "2", "4", "1", "2", "keep", "0"]
    assert cells["images_near"][0].startswith("near-identical images (dHash within 16 of 256 bits)")
    assert cells["texts"][-2:] == ["drop", "1"]
    assert "&lt;script&gt;" in section and "and 1 more" in section and "40 rows audited" in section


def test_the_overview_lists_each_pair_of_experiments_and_why_it_is_not_compared(
    tmp_path, make_experiment, env_info
):
    specs = {name: make_experiment(name) for name in ("alpha", "beta")}
    experiments = [collect_experiment(n, files, config) for n, (files, config) in specs.items()]
    for exp in experiments:
        exp["seed_claims"] = None
    out = outputs(tmp_path, list(specs))
    write_report(experiments, env_info=env_info, out_differences=tmp_path / "differences.csv", **out)
    with open(tmp_path / "differences.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["metric"], r["a"], r["b"]) for r in rows] == [
        (metric, "alpha", "beta")
        for metric in (
            "zero-shot mean AUC",
            "linear-probe mean AUC (chexpert5)",  # both evaluations hold this probe
            "clinical micro-F1 (CheXpert-14)",
            "clinical macro-F1 (CheXpert-14)",
            "clinical micro-F1 (CheXpert-5)",
            "clinical macro-F1 (CheXpert-5)",
            "BLEU-2",
            "BLEU-4",
            "ROUGE-L",
            "CIDEr-D",
        )
    ]
    assert all(r["not_computed"] and not r["difference"] for r in rows)  # never a made-up number
    page = Path(out["out_html"]).read_text()
    assert page.count('data-pair="alpha|beta"') == len(rows) and "not computed: an experiment has no" in page
    assert 'data-metric="linear-probe mean AUC (chexpert5)"' in page
    assert 'id="differences-table"' not in Path(out["out_pages"][0]).read_text()


def test_probes_on_probe_datasets_are_shown_for_the_encoder_and_the_captioners_tower(
    tmp_path, make_experiment, env_info
):
    files, config = make_experiment("probed")
    probe = {"chexpert5": {"mean": {"auc": 0.812, "ci_low": 0.7, "ci_high": 0.9, "labels": ["Edema"]}}}
    encoder = json.loads(Path(files["encoder_eval"]).read_text())
    encoder["external_probes"] = {
        "nih14": {**probe, "rows_per_split": {"train": 8, "val": 2, "test": 2}},
        "chexpert": {"not_computed": "no val rows in its split", "rows_per_split": {"train": 9, "val": 0}},
    }
    Path(files["encoder_eval"]).write_text(json.dumps(encoder))
    decoder = json.loads(Path(files["decoder_eval"]).read_text())
    decoder["encoder_final_probe"] = {"chexpert5": {"mean": {"auc": 0.654, "ci_low": 0.6, "ci_high": 0.7}}}
    decoder["encoder_final_external_probes"] = {"nih14": {"chexpert5": {"mean": {"auc": 0.777}}}}
    Path(files["decoder_eval"]).write_text(json.dumps(decoder))
    page = Path(render(tmp_path, env_info, {"probed": (files, config)})["out_pages"][0]).read_text()

    def section(anchor):  # from its heading to the next
        start = page.index(f'id="{anchor}"')
        return page[start : page.index("<h", start)]

    assert '0.812 <span class="ci">[0.70, 0.90]</span>' in section("probe-probed-nih14")
    assert "rows_per_split" not in section("probe-probed-nih14")  # the counts are no label set
    assert "not computed: no val rows in its split" in section("probe-probed-chexpert")
    assert '0.654 <span class="ci">[0.60, 0.70]</span>' in section("tower-probe-probed")
    assert "0.777" in section("tower-probe-probed-nih14")
    # the clinical table shows both macro F1s: over the observations present, and sklearn's over all
    clinical = page[page.index('<th class="text">clinical efficacy</th>') :]
    assert "macro F1 (present)" in clinical and "macro F1 (all)" in clinical
