"""The signed webhook CI systems call to start releases."""
