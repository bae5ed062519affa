"""The consumer process: RabbitMQ -> validate/normalise -> persist -> data-plane queues.

main.py is its loop (`run`), subscriptions.py its ws-gateway subscriptions, config.py its
section of the config file and the parts it reads.
"""
