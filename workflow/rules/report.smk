rule report:
    input:
        report_inputs,
    output:
        html=report(
            "results/report.html",
            caption="../report/report.rst",
            category="Report",
            labels={"page": "all experiments"},
        ),
        pages=[
            report(
                f"results/{name}/report.html",
                caption="../report/experiment_page.rst",
                category="Report",
                labels={"page": name},
            )
            for name in RUN
        ],
        summary_csv=report(
            "results/paper/summary.csv",
            caption="../report/paper_table.rst",
            category="Report",
            labels={"page": "paper table (CSV)"},
        ),
        summary_tex=report(
            "results/paper/summary.tex",
            caption="../report/paper_table.rst",
            category="Report",
            labels={"page": "paper table (LaTeX)"},
        ),
        differences=report(
            "results/paper/differences.csv",
            caption="../report/paper_differences.rst",
            category="Report",
            labels={"page": "paired differences between experiments"},
        ),
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


# The page of an experiment that is not in `run`: `snakemake results/<experiment>/report.html` builds what
# that experiment needs and its page alone (no overview, no paper table).
rule report_experiment:
    input:
        experiment_report_inputs,
    output:
        page="results/{experiment}/report.html",
    log:
        "results/logs/report/{experiment}.log",
    benchmark:
        "results/benchmarks/report/{experiment}.tsv"
    params:
        experiments=report_params,
    wildcard_constraints:
        experiment=NOT_IN_RUN,
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/report_experiment.py"
