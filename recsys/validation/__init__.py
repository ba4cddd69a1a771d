"""Data validation of each week's raw input (Great Expectations), quarantine and its report."""
