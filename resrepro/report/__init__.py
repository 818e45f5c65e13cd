"""Reports: the paper's tables and figures rendered from run directories."""
