from pathlib import Path

from setuptools import setup

setup(
    name="xprocess",
    version="0.3.0",
    description="pytest plugin: start the external processes tests need once, reuse them across runs",
    long_description=Path(__file__).with_name("README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="MIT",
    py_modules=["xprocess"],
    python_requires=">=3.9",
    install_requires=["pytest>=7.0", "psutil>=5.9"],
    entry_points={"pytest11": ["xprocess = xprocess"]},
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: Pytest",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: MIT License",
        "Operating System :: POSIX :: Linux",
        "Operating System :: MacOS",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Software Development :: Testing",
    ],
)
