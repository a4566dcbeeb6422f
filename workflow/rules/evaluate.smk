rule evaluate_encoder:
    input:
        pairs=rules.split.output.pairs,
        encoder=rules.train_encoder.output.encoder,
        external=get_external_prepared,
    output:
        metrics="results/{experiment}/eval/encoder.json",
        per_label="results/{experiment}/eval/encoder_per_label.csv",
        roc="results/{experiment}/eval/encoder_roc.csv",
    log:
        "results/logs/evaluate_encoder/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate_encoder/{experiment}.tsv"
    params:
        evaluate=evaluate_encoder_params,
    threads: 2
    resources:
        gpu=stage_resources("encoder", "gpus"),
        mem_mb=stage_resources("encoder", "mem_mb"),
        runtime=60,
    script:
        "../scripts/evaluate_encoder.py"


rule evaluate_decoder:
    input:
        chat=rules.convert_to_chat_format.output.chat,
        decoder=rules.train_decoder.output.decoder,
    output:
        metrics="results/{experiment}/eval/decoder.json",
        generations="results/{experiment}/eval/generations.jsonl",
        per_label="results/{experiment}/eval/decoder_per_label.csv",
    log:
        "results/logs/evaluate_decoder/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate_decoder/{experiment}.tsv"
    params:
        evaluate=evaluate_decoder_params,
    threads: 2
    resources:
        gpu=stage_resources("decoder", "gpus"),
        mem_mb=stage_resources("decoder", "mem_mb"),
        runtime=120,
    script:
        "../scripts/evaluate_decoder.py"
