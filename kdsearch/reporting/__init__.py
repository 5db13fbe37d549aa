"""Reporting: terminal tables, figures, the HTML report, the results document (RESULTS.md), status, dashboard."""
