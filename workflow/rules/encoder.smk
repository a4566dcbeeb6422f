rule train_encoder:
    input:
        unpack(get_prefetched),
        pairs=rules.split.output.pairs,
    output:
        encoder=report(
            directory("results/{experiment}/encoder"),
            patterns=["{file,metrics\\.csv}"],
            caption="../report/training_metrics.rst",
            category="Training",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "stage": "encoder"},
        ),
    log:
        "results/logs/train_encoder/{experiment}.log",
    benchmark:
        "results/benchmarks/train_encoder/{experiment}.tsv"
    params:
        encoder=encoder_params,
        zero_shot=encoder_zero_shot_params,
    threads: stage_resources("encoder", "cpus")
    resources:
        gpu=stage_resources("encoder", "gpus"),
        mem_mb=stage_resources("encoder", "mem_mb"),
        runtime=stage_resources("encoder", "runtime"),
    script:
        "../scripts/train_encoder.py"
