"""The dashboard's routers, one per area; :func:`~dicom_node.web.app.create_app` includes them."""
