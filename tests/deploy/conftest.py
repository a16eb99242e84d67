from tests.deploy.live_stack import live_stack

__all__ = ["live_stack"]
