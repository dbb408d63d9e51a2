"""The node's gRPC servicers: thin (decode, authorize, call :class:`node.instance.NodeInstance`)."""
