# medlens: raw datasets -> prepared pairs -> encoder -> decoder -> evaluation -> report.
# The rules live in workflow/rules/ (graph order); every helper lives in workflow/rules/common.smk.
import os
from pathlib import Path

from snakemake.utils import min_version, update_config

from medlens.config import load_yaml, naming_the_layer, validate_against_schema

min_version("9.0")

# The config is read by medlens's loader, not `configfile:`: it refuses repeated keys, non-UTF-8 bytes and
# YTE templates (Snakemake's loader would run the Python a `__use_yte__` file holds). Files given with
# --configfile were read by Snakemake before this file ran; they are checked here all the same, and, as with
# `configfile:`, override the default key by key, and --config overrides both.
DEFAULT_CONFIG = "config/config.yaml"
_files = [*workflow.overwrite_configfiles]
if not workflow.config_settings.replace_workflow_config and (os.path.exists(DEFAULT_CONFIG) or not _files):
    _files.insert(0, DEFAULT_CONFIG)
    workflow.configfiles.append(DEFAULT_CONFIG)  # recorded as `configfile:` would (report, source archive)
# the layers in the order they override each other: a config error names the one that set its key
CONFIG_LAYERS = [(str(p), load_yaml(p)) for p in _files]
CONFIG_LAYERS.append(("--config", dict(workflow.config_settings.config)))  # --config alone, files apart
for _source, _data in CONFIG_LAYERS:
    update_config(config, _data)
# messages name the file the user edited (a --configfile replaces the default)
CONFIG_FILE = str(_files[-1]) if _files else "--config"  # --replace-workflow-config with no file
SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"  # found from any working directory (-d)
SRC = Path(workflow.basedir) / "src"
with naming_the_layer(CONFIG_LAYERS):
    validate_against_schema(config, SCHEMAS / "config.schema.yaml", source=CONFIG_FILE)


include: "workflow/rules/common.smk"


# Under `snakemake --sdm apptainer` every job runs in this image of requirements.lock (env/medlens.def);
# without --sdm jobs run in the current environment. Either way they import medlens from this checkout:
# jobs inherit this process's environment (the image holds the locked packages, not medlens).
container: PIPELINE.container


os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))


# Jobs load pretrained artefacts from the Hugging Face cache that prefetch_weights filled on this host, with
# the hub offline (compute nodes often reach no internet); prefetch_weights itself goes online unless the
# user ran the workflow offline.
USER_HUB_OFFLINE = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
os.environ.update(HF_HUB_OFFLINE="1")


include: "workflow/rules/data.smk"
include: "workflow/rules/prefetch.smk"
include: "workflow/rules/encoder.smk"
include: "workflow/rules/decoder.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
