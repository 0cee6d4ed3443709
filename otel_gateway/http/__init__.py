"""The HTTP front: endpoints and the ASGI helpers they share."""
