rule train_decoder:
    input:
        unpack(get_prefetched),
        unpack(get_decoder_encoder),
        chat=rules.convert_to_chat_format.output.chat,
    output:
        decoder=report(
            directory(layout.DECODER),
            patterns=["{file,metrics\\.csv}"],
            caption="../report/training_metrics.rst",
            category="Training",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "stage": "decoder"},
        ),
    log:
        layout.log("train_decoder"),
    benchmark:
        layout.benchmark("train_decoder")
    params:
        decoder=decoder_params,
    threads: stage_resources("decoder", "cpus")
    resources:
        gpu=stage_resources("decoder", "gpus"),
        mem_mb=stage_resources("decoder", "mem_mb"),
        runtime=stage_resources("decoder", "runtime"),
        slurm_extra=TRAINING_SLURM_EXTRA,
    script:
        "../scripts/train_decoder.py"
