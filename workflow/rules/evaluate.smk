rule evaluate_encoder:
    input:
        pairs=rules.split.output.pairs,
        encoder=rules.train_encoder.output.encoder,
        external=get_external_prepared,
        probes=get_probe_pairs,
    output:
        metrics=report(
            layout.ENCODER_EVAL,
            caption="../report/encoder_metrics.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "encoder metrics"},
        ),
        per_label=report(
            layout.ENCODER_PER_LABEL,
            caption="../report/encoder_per_label.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "AUC per label"},
        ),
        roc=report(
            layout.ENCODER_ROC,
            caption="../report/encoder_roc.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "ROC points"},
        ),
        scores=layout.ZERO_SHOT_SCORES,
        classes=layout.CLASS_PREDICTIONS,
        probe_scores=layout.PROBE_SCORES,
    log:
        layout.log("evaluate_encoder"),
    benchmark:
        layout.benchmark("evaluate_encoder")
    params:
        evaluate=evaluate_encoder_params,
    threads: stage_resources("encoder", "cpus")
    resources:
        gpu=stage_resources("encoder", "gpus", at_most=1),
        mem_mb=stage_resources("encoder", "mem_mb"),
        runtime=lambda wildcards, attempt: 60 * attempt,  # a retry gets more time
    script:
        "../scripts/evaluate_encoder.py"


rule evaluate_decoder:
    input:
        unpack(get_prefetched),  # a LoRA adapter loads its base model from the cache
        chat=rules.convert_to_chat_format.output.chat,
        pairs=rules.split.output.pairs,  # labels for the probe of a captioner's own tower
        decoder=rules.train_decoder.output.decoder,
        probes=get_probe_pairs,  # a captioner's tower is probed on them too
    output:
        metrics=report(
            layout.DECODER_EVAL,
            caption="../report/decoder_metrics.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "decoder metrics"},
        ),
        generations=report(
            layout.GENERATIONS,
            caption="../report/generations.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "generated reports"},
        ),
        per_label=report(
            layout.DECODER_PER_LABEL,
            caption="../report/decoder_per_label.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "clinical F1 per label"},
        ),
        probe_scores=layout.TOWER_PROBE_SCORES,  # a header alone for a decoder without its own tower
    log:
        layout.log("evaluate_decoder"),
    benchmark:
        layout.benchmark("evaluate_decoder")
    params:
        evaluate=evaluate_decoder_params,
    threads: stage_resources("decoder", "cpus")
    resources:
        gpu=stage_resources("decoder", "gpus", at_most=1),
        mem_mb=stage_resources("decoder", "mem_mb"),
        runtime=lambda wildcards, attempt: 120 * attempt,
    script:
        "../scripts/evaluate_decoder.py"


# The report-generation metrics the field publishes (BERTScore, CheXbert F1, SembScore, RadGraph F1,
# RadCliQ-v1, RaTEScore), apart from generation: changing the list reruns the scoring alone.
rule score_reports:
    input:
        unpack(get_metric_weights),  # the metrics' weights, in the cache
        generations=rules.evaluate_decoder.output.generations,
        pairs=rules.split.output.pairs,
    output:
        metrics=report(
            layout.REPORT_METRICS,
            caption="../report/report_metrics.rst",
            category="Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "report-generation metrics"},
        ),
        scores=layout.REPORT_METRIC_SCORES,
    log:
        layout.log("score_reports"),
    benchmark:
        layout.benchmark("score_reports")
    params:
        evaluate=score_reports_params,
    threads: stage_resources("decoder", "cpus")
    resources:
        gpu=stage_resources("decoder", "gpus", at_most=1),
        mem_mb=score_reports_resources("mem_mb"),
        runtime=score_reports_resources("runtime"),
    script:
        "../scripts/score_reports.py"


rule export_rexrank:
    input:
        generations=rules.evaluate_decoder.output.generations,
        pairs=rules.split.output.pairs,
    output:
        layout.REXRANK,
    log:
        layout.log("export_rexrank"),
    benchmark:
        layout.benchmark("export_rexrank")
    localrule: True  # a second's work on the generations: no scheduler queue for it
    script:
        "../scripts/export_rexrank.py"


# The model folders to share: each a copy whose model card holds its evaluation's headline metrics; the
# training folder itself is never rewritten by a later rule.
rule export_hub:
    input:
        unpack(get_hub_inputs),
    output:
        directory(layout.HUB),
    log:
        layout.log("export_hub", "{experiment}.{stage}"),
    benchmark:
        layout.benchmark("export_hub", "{experiment}.{stage}")
    localrule: True  # a copy and a model card: no scheduler queue for it
    script:
        "../scripts/export_hub.py"
