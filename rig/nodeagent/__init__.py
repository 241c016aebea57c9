"""A node agent for the rig: test infrastructure standing in for the kubelet (docs/rig.md).

It is NOT a kubelet and not a container runtime: images become targets of the repo's
Dockerfile run from the repo's .venv, Riva images become the loopback Riva fake, and each Pod
gets its own network, mount and UTS namespaces.
"""
