rule report:
    input:
        report_inputs,
    output:
        html=report(
            layout.REPORT,
            caption="../report/report.rst",
            category="Report",
            labels={"page": "all experiments"},
        ),
        pages=[
            report(
                layout.EXPERIMENT_REPORT.format(experiment=name),
                caption="../report/experiment_page.rst",
                category="Report",
                labels={"page": name},
            )
            for name in RUN
        ],
        summary_csv=report(
            layout.PAPER.format(table="summary.csv"),
            caption="../report/paper_table.rst",
            category="Report",
            labels={"page": "paper table (CSV)"},
        ),
        summary_tex=report(
            layout.PAPER.format(table="summary.tex"),
            caption="../report/paper_table.rst",
            category="Report",
            labels={"page": "paper table (LaTeX)"},
        ),
        differences=report(
            layout.PAPER.format(table="differences.csv"),
            caption="../report/paper_differences.rst",
            category="Report",
            labels={"page": "paired differences between experiments"},
        ),
    log:
        layout.log("report", "report"),
    benchmark:
        layout.benchmark("report", "report")
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
        page=layout.EXPERIMENT_REPORT,
    log:
        layout.log("report"),
    benchmark:
        layout.benchmark("report")
    params:
        experiments=report_params,
    wildcard_constraints:
        experiment=NOT_IN_RUN,
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/report_experiment.py"


# Matches only a path in an experiment that does not exist, so that it fails naming the experiments there are,
# where Snakemake would only say that no rule produces it; it never runs.
rule reject_unknown_experiment:
    input:
        unknown_experiment,
    output:
        layout.IN_A_FOLDER,
    log:
        layout.log("reject_unknown_experiment", "{folder}/{path}"),
    benchmark:
        layout.benchmark("reject_unknown_experiment", "{folder}/{path}")
    wildcard_constraints:
        folder=UNKNOWN_EXPERIMENT,
        path=".+",
    localrule: True
    shell:
        "false"
