from ftcot.cli import main

main()
