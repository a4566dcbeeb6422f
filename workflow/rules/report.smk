rule report:
    input:
        report_inputs,
    output:
        html=report("results/report.html", caption="../report/report.rst", category="Report"),
        pages=expand("results/{experiment}/report.html", experiment=RUN),
        summary_csv="results/paper/summary.csv",
        summary_tex="results/paper/summary.tex",
    log:
        "results/logs/report/report.log",
    benchmark:
        "results/benchmarks/report/report.tsv"
    params:
        experiments=report_params,
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/report.py"
