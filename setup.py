# All metadata is in pyproject.toml; this file only declares the cffi module,
# which setuptools cannot express declaratively.
from setuptools import setup

setup(cffi_modules=["cbindings/build_hvfilter.py:ffibuilder"])
