"""The signaller process: market state + strategies (+ models) -> signals, and the learning
lifecycle it runs.

main.py is its loop (`run`); learning_loop.py, model_book.py, online.py and random_streams.py
its I/O around the pure decisions of msd.strategies and msd.learning; config.py its section.
"""
