def fibonacci(n):
    """Return the n-th Fibonacci number."""
    

print(fibonacci(10))
