"""What people read: terminal tables, PNG plots and report/index.html.

`page.write_report(run)` writes the page with every section registered in `sections.SECTIONS` that the
run holds; reads only the run's files, so it never imports the studies that wrote them.
"""
