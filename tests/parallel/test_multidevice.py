"""Runs ``multidevice_checks.py`` in its own process with 8 forced CPU devices (the checks need a
mesh; this process has one device, fixed when JAX started)."""
import os
import pathlib
import subprocess
import sys

CHECKS = pathlib.Path(__file__).with_name("multidevice_checks.py")


def test_multidevice_checks_pass_on_8_cpu_devices():
    environment = dict(os.environ, JAX_PLATFORMS="cpu")
    environment["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                      "--xla_force_host_platform_device_count=8"]))
    result = subprocess.run([sys.executable, "-m", "pytest", str(CHECKS), "-q", "-p", "no:cacheprovider",
                             "-o", "addopts=", "-W", "ignore::DeprecationWarning"],
                            env=environment, capture_output=True, text=True, timeout=600,
                            cwd=CHECKS.parents[2])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
