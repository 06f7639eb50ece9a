"""The Parquet score analysis of a scoring run: the verdict, its figures, removal lists and report.html."""
