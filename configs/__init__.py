"""The configs shipped with the package (monkeyreport.configs): the default and the profiles."""
