rule download:
    output:
        marker="results/raw/{dataset}/.complete",
    log:
        "results/logs/download/{dataset}.log",
    benchmark:
        "results/benchmarks/download/{dataset}.tsv"
    params:
        dataset=download_params,
    resources:
        mem_mb=2000,
        runtime=240,
    script:
        "../scripts/download.py"


rule prepare_datasets:
    input:
        marker=rules.download.output.marker,
    output:
        parquet="results/prepared/{dataset}.parquet",
        rejected=report(
            "results/prepared/{dataset}.rejected.csv",
            caption="../report/rejected.rst",
            category="Data",
            subcategory="rejected rows",
            labels={"dataset": "{dataset}", "table": "rejected rows"},
        ),
    log:
        "results/logs/prepare_datasets/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_datasets/{dataset}.tsv"
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
        pairs="results/{experiment}/data/pairs.parquet",
        dropped=report(
            "results/{experiment}/data/dropped.csv",
            caption="../report/dropped.rst",
            category="Data",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "rows dropped by the split"},
        ),
        stats=report(
            "results/{experiment}/data/split.json",
            caption="../report/split.rst",
            category="Data",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "split statistics"},
        ),
    log:
        "results/logs/split/{experiment}.log",
    benchmark:
        "results/benchmarks/split/{experiment}.tsv"
    params:
        split=split_params,
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/split.py"


rule convert_to_chat_format:
    input:
        pairs=rules.split.output.pairs,
    output:
        chat=directory("results/{experiment}/data/chat"),
    log:
        "results/logs/convert_to_chat_format/{experiment}.log",
    benchmark:
        "results/benchmarks/convert_to_chat_format/{experiment}.tsv"
    params:
        chat=chat_params,
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/convert_to_chat_format.py"
