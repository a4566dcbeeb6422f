# Helpers only (no rules): configuration loading and validation, wildcard constraints,
# input functions get_<thing>, params functions <stage>_params, and final_outputs().
import re
from functools import cache

from medlens import layout
from medlens.config import (
    ExperimentConfig,
    load_experiment,
    load_pipeline,
    naming_the_layer,
    to_dict,
)
from medlens.data.access import dataset_problems
from medlens.models.prefetch import needs_prefetch, scored_metrics
from medlens.errors import ConfigError
from snakemake.settings.types import DeploymentMethod

EXPERIMENT_SCHEMA = SCHEMAS / "experiment.schema.yaml"
# under --sdm apptainer the jobs run in the image built from this lock (env/medlens.def), not in this
# environment: what they can import is looked up there
IMAGE_LOCK = (
    Path(workflow.basedir) / "requirements.lock"
    if DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
    else None
)


def _experiments_dir(path):
    """The experiments folder; a missing one is named as such (each experiment in `run` would be 'not found')."""
    if not path.is_dir():
        raise ConfigError(
            f"'{path}' is not a folder",
            file=CONFIG_FILE,
            key="experiments_dir",
            expected="the folder of the experiment YAML files, relative to the working directory "
            f"({Path.cwd()})",
        )
    return path


with naming_the_layer(CONFIG_LAYERS):
    PIPELINE = load_pipeline(config, source=CONFIG_FILE)
    EXPERIMENTS_DIR = _experiments_dir(Path(PIPELINE.experiments_dir))


def _all_datasets_of(exp):
    """Every dataset an experiment reads: trained on, evaluated on, probed on."""
    return list(dict.fromkeys([*exp.datasets, *exp.evaluate.external_datasets, *exp.evaluate.probe_datasets]))


def _check_experiment(name, exp):
    """Every dataset an experiment names must be defined in config.yaml."""
    source = str(EXPERIMENTS_DIR / f"{name}.yaml")
    for key, names in (
        ("datasets", exp.datasets),
        ("evaluate.external_datasets", exp.evaluate.external_datasets),
        ("evaluate.probe_datasets", exp.evaluate.probe_datasets),
    ):
        for i, dataset in enumerate(names):
            if dataset not in PIPELINE.datasets:
                raise ConfigError(
                    f"unknown dataset '{dataset}'",
                    file=source,
                    key=f"{key}[{i}]",
                    expected=f"one of {', '.join(sorted(PIPELINE.datasets))} (defined in {CONFIG_FILE})",
                )
    # data that cannot be read is found now, by a dry run too, not by a job that waited for a GPU
    problems = [
        p
        for d in dict.fromkeys(_all_datasets_of(exp))
        for p in dataset_problems(
            d, PIPELINE.datasets[d], Path(layout.RAW.format(dataset=d)), source=CONFIG_FILE
        )
    ]
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigError(
            f"experiment '{name}' needs {len(problems)} datasets that cannot be read:\n  "
            + "\n  ".join(str(p) for p in problems)
        )
    return exp


@cache
def experiment(name) -> ExperimentConfig:
    """The validated, preset-resolved configuration of one experiment."""
    path = EXPERIMENTS_DIR / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
        raise ConfigError(
            f"experiment '{name}' not found", file=CONFIG_FILE, key="run", expected=f"one of {available}"
        )
    return _check_experiment(
        name, load_experiment(path, schema_path=EXPERIMENT_SCHEMA, image_lock=IMAGE_LOCK)
    )


# Validate every experiment that will run before any job starts.
RUN = list(PIPELINE.run)
with naming_the_layer(CONFIG_LAYERS):  # `run` and dataset paths may come from --config
    for _name in RUN:
        experiment(_name)


wildcard_constraints:
    dataset="|".join(sorted(PIPELINE.datasets)),
    stage="encoder|decoder",
    experiment="|".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))),


# ----------------------------------------------------------------------------- input functions


def get_prepared(wildcards):
    return [layout.PREPARED.format(dataset=d) for d in experiment(wildcards.experiment).datasets]


def get_probe_pairs(wildcards):
    """Each probe dataset's own split (rule split_probe), for the probes of evaluate_encoder/_decoder."""
    return [
        layout.PROBE_PAIRS.format(experiment=wildcards.experiment, dataset=d)
        for d in experiment(wildcards.experiment).evaluate.probe_datasets
    ]


def get_external_prepared(wildcards):
    return [
        layout.PREPARED.format(dataset=d) for d in experiment(wildcards.experiment).evaluate.external_datasets
    ]


def get_decoder_encoder(wildcards):
    """The captioner starts from the trained encoder when its config says so (the encoder->decoder edge)."""
    dec = experiment(wildcards.experiment).decoder
    if dec.kind == "captioner" and dec.init_from_encoder:
        return {"encoder": layout.ENCODER.format(experiment=wildcards.experiment)}
    return {}


def get_hub_inputs(wildcards):
    """A trained model and its evaluation, for its shareable copy."""
    if wildcards.stage == "encoder":
        return {"model": layout.ENCODER, "metrics": layout.ENCODER_EVAL}
    return {"model": layout.DECODER, "metrics": layout.DECODER_EVAL}


def get_prefetched(wildcards):
    """The prefetch record, for the jobs that load pretrained artefacts from the Hub (none for the demo)."""
    if needs_prefetch(experiment(wildcards.experiment)):
        return {"prefetched": layout.PREFETCHED.format(experiment=wildcards.experiment)}
    return {}


def get_metric_weights(wildcards):
    """The record of the report metrics' weights, for score_reports (none when it scores no metric)."""
    if scored_metrics(experiment(wildcards.experiment)):
        return {"weights": layout.PREFETCHED_METRICS.format(experiment=wildcards.experiment)}
    return {}


def metric_prefetch_params(wildcards):
    return scored_metrics(experiment(wildcards.experiment))


def _all_datasets(name):
    return _all_datasets_of(experiment(name))


def experiment_files(name):
    """Paths of everything the report reads for one experiment (all are inputs of its report): the
    stages the experiment has, and nothing of the ones it does not."""
    stages = experiment(name).stages
    files = {
        "prepared": {d: layout.PREPARED.format(dataset=d) for d in _all_datasets(name)},
        "pairs": layout.PAIRS.format(experiment=name),
        "split": layout.SPLIT.format(experiment=name),
    }
    if "encoder" in stages:
        files |= {
            "encoder": layout.ENCODER.format(experiment=name),
            "encoder_eval": layout.ENCODER_EVAL.format(experiment=name),
            "zero_shot_scores": layout.ZERO_SHOT_SCORES.format(experiment=name),
            "class_predictions": layout.CLASS_PREDICTIONS.format(experiment=name),
            "probe_scores": layout.PROBE_SCORES.format(experiment=name),
        }
    files["hub"] = {s: layout.HUB.format(experiment=name, stage=s) for s in stages}
    if "decoder" in stages:
        files |= {
            "chat": layout.CHAT.format(experiment=name),
            "decoder": layout.DECODER.format(experiment=name),
            "decoder_eval": layout.DECODER_EVAL.format(experiment=name),
            "generations": layout.GENERATIONS.format(experiment=name),
            "tower_probe_scores": layout.TOWER_PROBE_SCORES.format(experiment=name),
            "rexrank": layout.REXRANK.format(experiment=name),
            "report_metrics": layout.REPORT_METRICS.format(experiment=name),
            "report_metric_scores": layout.REPORT_METRIC_SCORES.format(experiment=name),
        }
    return files


def _files_of(names):
    files = set()
    for name in names:
        for value in experiment_files(name).values():
            files.update(value.values() if isinstance(value, dict) else [value])
    return sorted(files)


def report_inputs(wildcards):
    """Everything the report shows, for every experiment in `run` (a missing input fails the job)."""
    if not RUN:  # an empty `run` is fine for other targets (prepare a dataset), not for a report of nothing
        with naming_the_layer(CONFIG_LAYERS):
            raise ConfigError(
                f"run lists no experiment, so {layout.REPORT} would show nothing",
                file=CONFIG_FILE,
                key="run",
                expected=f"one or more of {', '.join(sorted(p.stem for p in EXPERIMENTS_DIR.glob('*.yaml')))}, "
                "or a target of its own (results/<experiment>/report.html, results/prepared/<dataset>.parquet)",
            )
    return _files_of(RUN)


def experiment_report_inputs(wildcards):
    """Everything one experiment's own page shows (an experiment not in `run`)."""
    return _files_of([wildcards.experiment])


# ----------------------------------------------------------------------------- params functions
# Each returns only its stage's settings, so editing one stage reruns it and what is downstream.


def download_params(wildcards):
    d = PIPELINE.datasets[wildcards.dataset]
    return {"source": d.source, "adapter": d.adapter, "slug": d.slug, "path": d.path, "manifest": d.manifest}


def prepare_params(wildcards):
    return to_dict(PIPELINE.datasets[wildcards.dataset])


def split_params(wildcards):
    return to_dict(experiment(wildcards.experiment).split)


def get_probe_prepared(wildcards):
    """The prepared parquet of one of the experiment's probe datasets; any other dataset's probe split is
    refused (it would split a dataset the experiment never probes, or one it trains on)."""
    exp = experiment(wildcards.experiment)
    if wildcards.dataset not in exp.evaluate.probe_datasets:
        raise ConfigError(
            f"'{wildcards.dataset}' is not a probe dataset of experiment '{wildcards.experiment}' (asked for by "
            f"{layout.PROBE_PAIRS.format(**wildcards)})",
            file=str(EXPERIMENTS_DIR / f"{wildcards.experiment}.yaml"),
            key="evaluate.probe_datasets",
            expected=f"one of {list(exp.evaluate.probe_datasets)}, or the dataset added there",
        )
    return [layout.PREPARED.format(dataset=wildcards.dataset)]


def probe_split_params(wildcards):
    """A probe dataset is split by the experiment's settings at patient level, never by its official lists:
    NIH's have no validation part, CheXpert's a 234-image one, and a probe chooses C on val."""
    return {**split_params(wildcards), "official": False}


def chat_params(wildcards):
    return to_dict(experiment(wildcards.experiment).chat)


def _stage_params(stage):
    """A training stage's settings without the scheduler's memory, time and CPU requests: those do not
    change what is trained, so editing them must not rerun it (the GPU count stays: it sets the global batch).
    """
    params = to_dict(stage)
    params["resources"] = {"gpus": stage.resources.gpus}
    return params


def prefetch_params(wildcards):
    """Only the keys that name Hub artefacts: editing anything else neither refetches nor reruns."""
    exp = experiment(wildcards.experiment)
    enc, dec = exp.encoder, exp.decoder
    return {
        "stages": exp.stages,
        "encoder": {k: getattr(enc, k) for k in PREFETCH_ENCODER_KEYS},
        "decoder": {k: getattr(dec, k) for k in ("kind", "model", "tokenizer")},
    }


PREFETCH_ENCODER_KEYS = (
    "model",
    "pretrained",
    "pretrained_image",
    "pretrained_text_model",
    "pretrained_text",
    "tokenizer",
)


def encoder_params(wildcards):
    return _stage_params(experiment(wildcards.experiment).encoder)


def encoder_zero_shot_params(wildcards):
    """Zero-shot settings used for validation during encoder training."""
    return to_dict(experiment(wildcards.experiment).evaluate.zero_shot)


def decoder_params(wildcards):
    return _stage_params(experiment(wildcards.experiment).decoder)


def evaluate_encoder_params(wildcards):
    ev = experiment(wildcards.experiment).evaluate
    return {
        k: to_dict(getattr(ev, k))
        for k in (
            "split",
            "external_datasets",
            "recall_ks",
            "bootstrap_samples",
            "seed",
            "zero_shot",
            "linear_probe",
            "max_samples",
        )
    }


def evaluate_decoder_params(wildcards):
    ev = experiment(wildcards.experiment).evaluate
    return {
        k: to_dict(getattr(ev, k))
        for k in (
            "split",
            "bootstrap_samples",
            "seed",
            "generation",
            "labeler",
            "linear_probe",
            "max_samples",
        )
    }


def score_reports_params(wildcards):
    ev = experiment(wildcards.experiment).evaluate
    return {k: to_dict(getattr(ev, k)) for k in ("report_metrics", "bootstrap_samples", "seed")}


def report_params(wildcards):
    """Per experiment in `run` (or the one page asked for): its resolved config, the files it produced, and
    each stage's benchmark and log.

    Benchmarks and logs are not inputs (no rule declares them); the report shows them as missing when absent.
    """
    from medlens.report.claims import load_seed_claims

    params = {}
    for name in [wildcards.experiment] if "experiment" in wildcards.keys() else RUN:
        exp = experiment(name)
        if exp.report.seed_claims is not None:
            try:  # an unknown name fails here, before any job runs, naming the experiment file
                load_seed_claims(exp.report.seed_claims)
            except ConfigError as e:
                raise ConfigError(
                    e.problem,
                    file=str(EXPERIMENTS_DIR / f"{name}.yaml"),
                    key="report.seed_claims",
                    expected=e.expected,
                ) from e
        datasets = _all_datasets(name)
        stages = ["split", *(["convert_to_chat_format"] if "decoder" in exp.stages else [])]
        stages += [f"{verb}_{s}" for s in exp.stages for verb in ("train", "evaluate")]
        config_view = to_dict(exp)  # without memory/time/CPU requests, as for the training rules
        config_view["encoder"], config_view["decoder"] = _stage_params(exp.encoder), _stage_params(
            exp.decoder
        )
        params[name] = {
            "config": config_view,
            "files": {
                **experiment_files(name),
                "benchmarks": {
                    **{f"download/{d}": layout.benchmark("download", d) for d in datasets},
                    **{f"prepare_datasets/{d}": layout.benchmark("prepare_datasets", d) for d in datasets},
                    **{s: layout.benchmark(s, name) for s in stages},
                },
                "logs": {f"train_{s}": layout.log(f"train_{s}", name) for s in exp.stages},
            },
        }
    return params


def score_reports_resources(key):
    """score_reports' memory and time: GREEN, a 7B model writing a paragraph per report, needs far more than
    the other metrics: on a CPU its float32 weights (~27 GB) and their key/value cache (up to ~16 GB at 8
    answers of 2,048 tokens), on a GPU the host memory to load 16-bit weights; retries ask for more, like the
    training jobs."""
    default, on_gpu, on_cpu = {"mem_mb": (8000, 32000, 48000), "runtime": (120, 720, 720)}[key]

    def get(wildcards, attempt=1):
        exp = experiment(wildcards.experiment)
        if "green" not in exp.evaluate.report_metrics:
            return default * attempt
        return (on_gpu if exp.decoder.resources.gpus else on_cpu) * attempt

    return get


def stage_resources(stage, key, at_most=None):
    """A training/evaluation job's request, read from the experiment's encoder/decoder `resources`.

    `at_most` caps it: evaluation runs in one process, and more than one GPU would sit idle.
    """

    def get(wildcards, attempt=1):
        res = getattr(experiment(wildcards.experiment), stage).resources
        value = getattr(res, key)
        if at_most is not None:
            value = min(value, at_most)
        # retries ask for more memory and time (a job killed for either gets what it lacked)
        return value * attempt if key in ("mem_mb", "runtime") else value

    return get


# SLURM sends SIGTERM 10 min before a training job's time limit: training finishes its step, checkpoints and
# stops, and the retry resumes. TERM, not USR1: the Snakemake process that runs the rule inside the job exits at
# once on USR1 and takes the job down. Declared by the rules, not the profile: a --set-resources on the command
# line replaces the profile's whole set-resources, and the signal would be lost with it.
TRAINING_SLURM_EXTRA = "--signal=TERM@600"


# ----------------------------------------------------------------------------- targets


def final_outputs():
    return [layout.REPORT]


# the experiments whose page only the report_experiment rule writes (the report rule writes those in `run`);
# a pattern that matches no name when every experiment runs
NOT_IN_RUN = "|".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if p.stem not in RUN)) or "(?!)"


def unknown_experiment(wildcards):
    """Stops the DAG at a path asked for in an experiment that has no file, naming the ones there are (Snakemake
    would only say that no rule produces it)."""
    known = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
    raise ConfigError(
        f"no experiment '{wildcards.folder}' (asked for by {layout.IN_A_FOLDER.format(**wildcards)})",
        file=str(EXPERIMENTS_DIR),
        expected=f"one of {', '.join(known)} (a <name>.yaml there)",
    )


def unknown_dataset(wildcards):
    """Stops the DAG at a raw or prepared path of a dataset the configuration does not define, naming the ones
    it does (Snakemake would only say that no rule produces it)."""
    name = wildcards.path.split("/")[0]
    for suffix in (".rejected.csv", ".parquet"):
        name = name.removesuffix(suffix)
    raise ConfigError(
        f"no dataset '{name}' (asked for by {layout.IN_A_FOLDER.format(**wildcards)})",
        file=CONFIG_FILE,
        key="datasets",
        expected=f"one of {', '.join(sorted(PIPELINE.datasets))}",
    )


# a path in results/raw or results/prepared that does not start with a configured dataset's name
UNKNOWN_DATASET = "(?!(?:" + "|".join(re.escape(d) for d in sorted(PIPELINE.datasets)) + r")(?:/|\.))[^/].*"
# a folder of results/ that is neither an experiment nor one of the shared ones (layout.SHARED_FOLDERS)
UNKNOWN_EXPERIMENT = (
    "(?!(?:"
    + "|".join(
        re.escape(name)
        for name in sorted({p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")} | set(layout.SHARED_FOLDERS))
    )
    + ")/)[^/]+"
)
