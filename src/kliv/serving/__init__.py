"""``kliv serve``: the data plane beside the control plane (DESIGN.md, "Local platform").

One process, one port: the function gateway and runtime under each project's
``/p/<namespace>/<project>``, and ``/healthz``. It reads the control database the core
writes and follows it with LISTEN/NOTIFY; several replicas may run. Built by
:func:`kliv.serving.app.build`, started by the ``kliv serve`` command.
"""
