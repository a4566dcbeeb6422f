# Pretrained weights, processors and tokenizers from the Hugging Face Hub, fetched on the submit host (a
# local rule) before any GPU job starts; the jobs then load them from the cache with the hub offline.
rule prefetch_weights:
    output:
        record=layout.PREFETCHED,
    log:
        layout.log("prefetch_weights"),
    benchmark:
        layout.benchmark("prefetch_weights")
    params:
        artefacts=prefetch_params,
        offline=USER_HUB_OFFLINE,
    localrule: True
    script:
        "../scripts/prefetch_weights.py"


# The weights of the report-generation metrics (evaluate.report_metrics), on the submit host too; apart from
# prefetch_weights so that changing the metrics reruns their scoring alone. A metric whose weights cannot be
# fetched is recorded as missing and reported as not computed, with the reason.
rule prefetch_metric_weights:
    output:
        record=layout.PREFETCHED_METRICS,
    log:
        layout.log("prefetch_metric_weights"),
    benchmark:
        layout.benchmark("prefetch_metric_weights")
    params:
        metrics=metric_prefetch_params,
        offline=USER_HUB_OFFLINE,
    localrule: True
    script:
        "../scripts/prefetch_metric_weights.py"
