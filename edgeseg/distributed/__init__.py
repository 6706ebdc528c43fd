"""Ray (the ``edgeseg[ray]`` extra): ``infer --ray`` over model replicas, ``bench --ray`` over a device fleet.
Nothing here is imported unless a ``--ray`` option (or ``ray=`` argument) asks for it."""
