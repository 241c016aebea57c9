"""Rig helpers written in Python (the rig itself is rig/*.sh); see docs/rig.md."""
