rule train_encoder:
    input:
        unpack(get_prefetched),
        pairs=rules.split.output.pairs,
    output:
        encoder=report(
            directory(layout.ENCODER),
            patterns=["{file,metrics\\.csv}"],
            caption="../report/training_metrics.rst",
            category="Training",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "stage": "encoder"},
        ),
    log:
        layout.log("train_encoder"),
    benchmark:
        layout.benchmark("train_encoder")
    params:
        encoder=encoder_params,
        zero_shot=encoder_zero_shot_params,
    threads: stage_resources("encoder", "cpus")
    resources:
        gpu=stage_resources("encoder", "gpus"),
        mem_mb=stage_resources("encoder", "mem_mb"),
        runtime=stage_resources("encoder", "runtime"),
        slurm_extra=TRAINING_SLURM_EXTRA,
    script:
        "../scripts/train_encoder.py"
