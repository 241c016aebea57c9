"""The VoiceHive Kubernetes operator (Kopf): HotelLine and VoiceSession reconciliation.

Layout (dask-kubernetes / mysql-operator style): ``handlers`` holds thin Kopf handlers that
delegate to ``lines`` and ``sessions``; ``builders`` are pure functions that turn a spec into
Kubernetes objects and LiveKit requests; ``kube``, ``livekit_sip`` and ``providers`` wrap the
real client libraries; ``settings`` reads the operator's own configuration from the environment.
"""
