"""Data files shipped with medbatch (the illustrative ECG answers); no code, no imports."""
