"""The report templates, shipped as package data (monkeyreport.templates); edit the .j2/.css files."""
