rule evaluate_encoder:
    input:
        pairs=rules.split.output.pairs,
        encoder=rules.train_encoder.output.encoder,
        external=get_external_prepared,
    output:
        metrics=report(
            "results/{experiment}/eval/encoder.json",
            caption="../report/encoder_metrics.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "encoder metrics"},
        ),
        per_label=report(
            "results/{experiment}/eval/encoder_per_label.csv",
            caption="../report/encoder_per_label.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "AUC per label"},
        ),
        roc=report(
            "results/{experiment}/eval/encoder_roc.csv",
            caption="../report/encoder_roc.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "ROC points"},
        ),
        scores="results/{experiment}/eval/zero_shot_scores.csv",
    log:
        "results/logs/evaluate_encoder/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate_encoder/{experiment}.tsv"
    params:
        evaluate=evaluate_encoder_params,
    threads: stage_resources("encoder", "cpus")
    resources:
        gpu=stage_resources("encoder", "gpus", at_most=1),
        mem_mb=stage_resources("encoder", "mem_mb"),
        runtime=60,
    script:
        "../scripts/evaluate_encoder.py"


rule evaluate_decoder:
    input:
        unpack(get_prefetched),  # a LoRA adapter loads its base model from the cache
        chat=rules.convert_to_chat_format.output.chat,
        pairs=rules.split.output.pairs,  # labels for the probe of a captioner's own tower
        decoder=rules.train_decoder.output.decoder,
    output:
        metrics=report(
            "results/{experiment}/eval/decoder.json",
            caption="../report/decoder_metrics.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "decoder metrics"},
        ),
        generations=report(
            "results/{experiment}/eval/generations.jsonl",
            caption="../report/generations.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "generated reports"},
        ),
        per_label=report(
            "results/{experiment}/eval/decoder_per_label.csv",
            caption="../report/decoder_per_label.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "clinical F1 per label"},
        ),
    log:
        "results/logs/evaluate_decoder/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate_decoder/{experiment}.tsv"
    params:
        evaluate=evaluate_decoder_params,
    threads: stage_resources("decoder", "cpus")
    resources:
        gpu=stage_resources("decoder", "gpus", at_most=1),
        mem_mb=stage_resources("decoder", "mem_mb"),
        runtime=120,
    script:
        "../scripts/evaluate_decoder.py"


rule export_rexrank:
    input:
        generations=rules.evaluate_decoder.output.generations,
        pairs=rules.split.output.pairs,
    output:
        "results/{experiment}/eval/rexrank.json",
    log:
        "results/logs/export_rexrank/{experiment}.log",
    benchmark:
        "results/benchmarks/export_rexrank/{experiment}.tsv"
    localrule: True  # a second's work on the generations: no scheduler queue for it
    script:
        "../scripts/export_rexrank.py"
