"""The seed project's tools on a run or a config: the LR range test (``lr_find``), a finished run's analysis
(``analyze``), training curves and the epoch table (``curves``), and the data path profile (``profile_data``)."""
