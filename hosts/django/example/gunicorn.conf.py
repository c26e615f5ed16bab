# gunicorn -c gunicorn.conf.py exampleproject.wsgi
# Each worker process compiles (or loads the cached precompiled) component once; every request gets
# a fresh instance, so threads are safe. Behind a proxy, list it in MFA_STEP["TRUSTED_PROXIES"].
bind = "127.0.0.1:8000"
workers = 2
threads = 4
preload_app = False  # the engine is built lazily, in each worker, at its first request
