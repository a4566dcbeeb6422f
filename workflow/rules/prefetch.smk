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
