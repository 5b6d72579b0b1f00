"""Depth analysis: what does the shortcut buy? (see ``docs/depth.md``)

* ``lesion``: delete blocks at test time (Veit et al. 2016), as a runtime mask that equals the spec edit.
* ``paths``: the path-length distribution and which path lengths carry the gradient.
* ``linearize``: partial linearisation after training, channel-wise (variable depth) vs layer-wise (fixed
  depth), and the average path length (Mehmeti-Göpel et al. 2022, 2025).
* ``effective_depth``: branch-to-shortcut norms and the output's split over path lengths; ``tracking``
  measures them during training (the ``analysis`` section of a training config: ``SECTION`` declares it,
  ``make_hook`` serves it).
* ``paired`` and ``frontier`` judge evidence: paired per-seed differences, and the accuracy-against-MACs
  curve of fixed networks read at a searched network's cost.
* ``studies`` runs them on one trained network, ``compare`` trains a network and its plain twin over seeds
  and runs them all, ``report`` draws the plots and writes the report, ``cli`` is ``reslab analyze``.
"""

from ..lazy import lazy_exports

# Imported on first use: `reslab --help` and the other commands' parsers do not load torch.
lazy_exports(
    __name__,
    {
        ".compare": ["compare", "twin_configs"],
        ".effective_depth": [
            "BlockNorm", "DepthSnapshot", "PathOutput", "branch_norms", "measure_depth", "output_by_path_length"
        ],
        ".errors": ["AnalysisError"],
        ".frontier": ["curve_accuracy"],
        ".evaluate": ["accuracy", "as_batches"],
        ".lesion": ["LesionResult", "lesion_kind", "lesion_pool", "lesion_study", "lesioned", "remove_blocks"],
        ".linearize": ["LeakyUnit", "LinearizableNet", "LinearizeConfig", "LinearizeResult", "linearization_study"],
        ".paths": ["PathGradient", "gradient_by_path_length", "path_length_counts", "path_length_distribution"],
        ".report": ["write_report"],
        ".studies": ["RunStudies", "StudyOptions", "run_studies"],
        ".tracking": ["SECTION", "EffectiveDepthHook", "TrackingConfig", "make_hook"],
    },
)

__all__ = [
    "SECTION", "AnalysisError", "BlockNorm", "DepthSnapshot", "EffectiveDepthHook", "LeakyUnit", "LesionResult",
    "LinearizableNet", "LinearizeConfig", "LinearizeResult", "PathGradient", "PathOutput", "RunStudies",
    "StudyOptions", "TrackingConfig", "accuracy", "as_batches", "branch_norms", "compare", "curve_accuracy",
    "gradient_by_path_length", "lesion_kind", "lesion_pool", "lesion_study", "lesioned", "linearization_study",
    "make_hook",
    "measure_depth", "output_by_path_length", "path_length_counts", "path_length_distribution",
    "remove_blocks", "run_studies", "twin_configs", "write_report",
]
