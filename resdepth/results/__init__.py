"""From run directories to what a reader reads: status, tables, figures, report, and the paper's numbers."""
