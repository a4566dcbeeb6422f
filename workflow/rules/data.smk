# A local rule: a Kaggle source downloads, and the compute nodes of many clusters reach no internet (the other
# sources only write the marker).
rule download:
    output:
        marker=layout.RAW_MARKER,
    log:
        layout.log("download", "{dataset}"),
    benchmark:
        layout.benchmark("download", "{dataset}")
    params:
        dataset=download_params,
    localrule: True
    resources:
        mem_mb=2000,
        runtime=240,
    script:
        "../scripts/download.py"


rule prepare_datasets:
    input:
        marker=rules.download.output.marker,
    output:
        parquet=layout.PREPARED,
        rejected=report(
            layout.REJECTED,
            caption="../report/rejected.rst",
            category="Data",
            subcategory="rejected rows",
            labels={"dataset": "{dataset}", "table": "rejected rows"},
        ),
    log:
        layout.log("prepare_datasets", "{dataset}"),
    benchmark:
        layout.benchmark("prepare_datasets", "{dataset}")
    params:
        dataset=prepare_params,
    threads: 8
    resources:
        mem_mb=8000,
        runtime=240,
    script:
        "../scripts/prepare_datasets.py"


rule split:
    input:
        prepared=get_prepared,
    output:
        pairs=layout.PAIRS,
        dropped=report(
            layout.DROPPED,
            caption="../report/dropped.rst",
            category="Data",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "rows dropped by the split"},
        ),
        stats=report(
            layout.SPLIT,
            caption="../report/split.rst",
            category="Data",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "split statistics"},
        ),
    log:
        layout.log("split"),
    benchmark:
        layout.benchmark("split")
    params:
        split=split_params,
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/split.py"


# Matches only a raw or prepared path of a dataset config.yaml does not define, so that it fails naming the
# datasets there are, where Snakemake would only say that no rule produces it; it never runs.
rule reject_unknown_dataset:
    input:
        unknown_dataset,
    output:
        layout.IN_A_FOLDER,
    log:
        layout.log("reject_unknown_dataset", "{folder}/{path}"),
    benchmark:
        layout.benchmark("reject_unknown_dataset", "{folder}/{path}")
    wildcard_constraints:
        folder="raw|prepared",
        path=UNKNOWN_DATASET,
    localrule: True
    shell:
        "false"


# A dataset the experiment only probes (evaluate.probe_datasets) gets its own split, by the experiment's
# split settings at patient level (probe_split_params), never merged with the training pairs.
rule split_probe:
    input:
        prepared=get_probe_prepared,
    output:
        pairs=layout.PROBE_PAIRS,
        dropped=layout.PROBE_DROPPED,
        stats=layout.PROBE_SPLIT,
    log:
        layout.log("split_probe", "{experiment}/{dataset}"),
    benchmark:
        layout.benchmark("split_probe", "{experiment}/{dataset}")
    params:
        split=probe_split_params,
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/split.py"


rule convert_to_chat_format:
    input:
        pairs=rules.split.output.pairs,
    output:
        chat=directory(layout.CHAT),
    log:
        layout.log("convert_to_chat_format"),
    benchmark:
        layout.benchmark("convert_to_chat_format")
    params:
        chat=chat_params,
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/convert_to_chat_format.py"
