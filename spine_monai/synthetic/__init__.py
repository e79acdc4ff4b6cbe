"""Synthetic stand-ins for the real data: generators that write exactly the files the readers of
:mod:`spine_monai.data` read (ELL888 X-ray folders, MRI case folders and DICOM series), with the ground truth
beside them.

They feed the demo, the tests and the synthetic benchmarks; figures measured on them say nothing about accuracy on
real films (``docs/real_data.md``).
"""
